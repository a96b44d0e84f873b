"""The audit record on the wire: timestamps, one-line JSON, and the hash chain linking lines."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from guardrail.paths import public_path

if TYPE_CHECKING:
    from starlette.types import Scope

    from guardrail.decision import Decision
    from guardrail.policy import Policy

GENESIS = "sha256:" + "0" * 64
"""The ``prev`` of the first record of a fresh trail."""


def format_ts(epoch_seconds: float) -> str:
    """``"2026-11-28T14:00:00.123Z"``: UTC, millisecond precision."""
    # Rounding (not truncating) keeps 0.123 from printing as .122 through float error.
    millis = round(epoch_seconds * 1000)
    seconds, ms = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


def parse_ts(text: str) -> float:
    """Inverse of :func:`format_ts` (any ISO 8601 time with an offset); else ``ValueError``."""
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {text!r}")
    return parsed.timestamp()


_SURROGATE = re.compile("[\ud800-\udfff]")


def encode(record: Mapping[str, Any]) -> str:
    """One JSON line, without the newline. Key order is kept: the chain hashes these exact bytes.

    The line is always valid UTF-8: a lone surrogate (a path decoded with ``surrogateescape``,
    say) is written as its JSON escape ``\\udce9``, which reads back as the same string.
    """
    line = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    if _SURROGATE.search(line):
        # Only a string can hold one, and inside a JSON string the escape means the same text.
        line = _SURROGATE.sub(_escape, line)
    return line


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def link(line: str | bytes) -> str:
    """The ``prev`` value of the record that follows ``line`` (given without its newline)."""
    data = line.encode("utf-8") if isinstance(line, str) else line
    return "sha256:" + hashlib.sha256(data).hexdigest()


# How much of each client-supplied string a record keeps, in characters (SPEC §4). A character
# costs at most 6 bytes in the line (a control character or lone surrogate is a \uXXXX escape),
# so with the cut marker one record stays a few kilobytes whatever the client sends.
MAX_PATH = 512
MAX_METHOD = 16
MAX_SUBJECT = 128
"""Per member of ``subject``: account, api_key, ip, subnet."""
MAX_TEXT = 256
"""Any other client-derived string a record carries."""


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` when at most ``limit`` characters; else its first ``limit`` followed by
    ``…[N chars, sha256:H]``: the original length and 16 hex digits of its SHA-256, so two cut
    values can still be told apart (or matched against a known one)."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{text[:limit]}…[{len(text)} chars, sha256:{digest}]"


def _subject(members: dict[str, str]) -> dict[str, str]:
    for name, value in members.items():
        if len(value) > MAX_SUBJECT:
            members[name] = clip(value, MAX_SUBJECT)
    return members


def decision_record(
    policy: Policy, scope: Scope, decision: Decision, now: float, status: int
) -> dict[str, Any]:
    """The record of one decision (SPEC section 4), with what only some decisions carry.
    Every string the client chose is cut to a bound (:func:`clip`)."""
    record: dict[str, Any] = {
        "ts": format_ts(now),
        "request_id": decision.request_id,
        "policy": policy.digest,
        "mode": policy.mode,
        "route": decision.route,
        "method": clip(scope.get("method", "GET"), MAX_METHOD),
        "path": clip(public_path(scope), MAX_PATH),  # as the client sent it, prefix and all
        "subject": _subject(decision.subject.as_dict()),
        "action": decision.action,
        "tier": decision.tier,
        "score": decision.score,
        "signals": decision.signals,
        "limit": hit.as_dict() if (hit := decision.limit) else None,
        "status": status,
    }
    if decision.tokens:  # a token budget: what was reserved, and what it was settled to
        record["tokens"] = {"reserved": decision.tokens, "used": decision.used}
    if decision.degraded:
        record["degraded"] = True  # decided by the local fallback while the store was down
    if decision.storage_error:
        record["storage_error"] = True  # fail_closed: refused because nothing could decide
    if decision.watermark is not None:  # which key and principal its seed came from, not the seed
        record["watermark"] = decision.watermark.as_record()
    return record
