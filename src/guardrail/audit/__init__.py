"""The audit trail: records handed off the request path, written in batches, hash-chained."""

from __future__ import annotations

from guardrail.audit.reader import (
    Location,
    format_record,
    iter_records,
    render_summary,
    summary,
    tail,
    trail_files,
)
from guardrail.audit.record import GENESIS, encode, format_ts, link, parse_ts
from guardrail.audit.sinks import FileSink, RedisStreamSink, Sink, StdoutSink, sink_from_uri
from guardrail.audit.verify import verify
from guardrail.audit.writer import AuditLog

__all__ = [
    "GENESIS",
    "AuditLog",
    "FileSink",
    "Location",
    "RedisStreamSink",
    "Sink",
    "StdoutSink",
    "encode",
    "format_record",
    "format_ts",
    "iter_records",
    "link",
    "parse_ts",
    "render_summary",
    "sink_from_uri",
    "summary",
    "tail",
    "trail_files",
    "verify",
]
