"""A process that ends without lifespan: the audit log writes what it still holds."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import httpx
import pytest

from guardrail import Guardrail, Policy
from guardrail.audit import at_exit
from guardrail.audit.sinks import FileSink
from guardrail.audit.verify import verify
from guardrail.audit.writer import AuditLog

from audit_helpers import make_record, request_ids
from helpers import echo_app


def test_records_queued_when_the_loop_ends_are_written_by_the_cancelled_writer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"

    async def serve_and_leave() -> AuditLog:
        log = AuditLog(FileSink(path))
        await log.start()
        for i in range(5):
            log.emit(make_record(i))
        await log.flush()
        for i in range(5, 300):
            log.emit(make_record(i))
        return log  # not closed: asyncio.run cancels the writer task with records queued

    log = asyncio.run(serve_and_leave())
    assert request_ids(path) == [f"req-{i:06d}" for i in range(300)]
    assert (log.written, log.lost, log.closed) == (300, 0, True)
    ok, report = verify(path)
    assert ok, report
    assert "300 records" in report


async def test_exit_sync_writes_the_queue_and_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(FileSink(path), queue_size=3)
    await log.start()
    log.emit(make_record(0))
    await log.flush()
    for i in range(1, 5):  # 3 queued, 1 overflows
        log.emit(make_record(i))
    held: list[int] = []

    def hand_over() -> None:  # what the middleware's refusal counts do
        held.append(1)
        log.emit(make_record(9))

    log.before_exit = hand_over
    log.exit_sync()
    log.exit_sync()  # once
    assert request_ids(path) == [
        "req-000000",
        "req-000001",
        "req-000002",
        "req-000003",
        "req-000009",
    ]
    assert held == [1]
    assert verify(path)[0]
    assert log.closed


class _LoopOnlySink:
    async def write(self, lines: Sequence[str]) -> None: ...

    async def close(self) -> None: ...

    async def last_line(self) -> str | None:
        return None


async def test_what_cannot_be_written_at_exit_is_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = AuditLog(_LoopOnlySink())
    await log.start()
    for i in range(3):
        log.emit(make_record(i))
    caplog.set_level(logging.ERROR, logger="guardrail.audit")
    log.exit_sync()
    assert log.lost == 3
    assert any(
        "3 record(s) could not be written" in r.getMessage() and r.levelno == logging.ERROR
        for r in caplog.records
    )


async def test_caught_up_waits_for_the_write_and_returns_at_once_when_nothing_is_pending(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(FileSink(path))
    await log.start()
    await asyncio.wait_for(log.caught_up(5.0), 0.01)  # nothing emitted
    log.emit(make_record(0))
    await log.caught_up(5.0)
    assert request_ids(path) == ["req-000000"]
    await log.close()


POLICY = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
routes:
  - name: pages
    match: {path: /}
    limits:
      - {per: ip, rate: 1/hour, burst: 1}
audit: {sink: "file://%s"}
"""


async def test_without_lifespan_a_request_returns_once_its_record_is_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    guard = Guardrail(echo_app(), policy=Policy.from_string(POLICY % path))
    transport = httpx.ASGITransport(app=guard)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        statuses = [(await client.get("/page")).status_code for _ in range(4)]
        assert statuses == [200, 429, 429, 429]
        assert len(request_ids(path)) == 1  # the first refusal, at once; the rest are held
    guard.audit.exit_sync()  # what the process's end does: the held count is written too
    assert len(request_ids(path)) == 2
    assert verify(path)[0]


async def test_a_stop_signal_hands_over_the_held_records_then_reaches_the_server(
    tmp_path: Path,
) -> None:
    received: list[int] = []

    def server_handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGTERM, server_handler)
    try:
        log = AuditLog(FileSink(tmp_path / "audit.jsonl"))
        handed: list[int] = []
        log.before_exit = lambda: handed.append(1)
        await log.start()
        at_exit.watch(log)
        at_exit.watch(log)  # chained once
        signal.raise_signal(signal.SIGTERM)
        await asyncio.sleep(0)  # the loop runs what the handler scheduled
        await asyncio.sleep(0)
        assert (received, handed) == ([signal.SIGTERM], [1])
        await log.close()
    finally:
        signal.signal(signal.SIGTERM, previous)


async def test_a_default_signal_disposition_is_left_alone(tmp_path: Path) -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        log = AuditLog(FileSink(tmp_path / "audit.jsonl"))
        await log.start()
        at_exit.watch(log)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        await log.close()
    finally:
        signal.signal(signal.SIGTERM, previous)
