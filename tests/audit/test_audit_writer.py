from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from guardrail.audit.record import GENESIS, link
from guardrail.audit.sinks import FileSink, StdoutSink, sink_from_uri
from guardrail.audit.verify import verify
from guardrail.audit.writer import AuditLog

from audit_helpers import (
    file_names,
    make_record,
    request_ids,
    stream_lines,
    trail_lines,
)


class MemorySink:
    """A sink that keeps lines in a list and fails the first ``failures`` writes.

    With ``partial``, a failing write keeps that many lines first (a pipeline cut mid-way)."""

    def __init__(self, failures: int = 0, partial: int = 0) -> None:
        self.lines: list[str] = []
        self.failures = failures
        self.partial = partial
        self.calls = 0
        self.closed = False

    async def write(self, lines: Sequence[str]) -> None:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            self.lines.extend(lines[: self.partial])
            raise ConnectionError("sink unavailable")
        self.lines.extend(lines)

    async def close(self) -> None:
        self.closed = True

    async def last_line(self) -> str | None:
        return self.lines[-1] if self.lines else None


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def records(lines: Sequence[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]


def assert_chain(lines: Sequence[str], first_prev: str = GENESIS) -> None:
    expected = first_prev
    for line in lines:
        assert json.loads(line)["prev"] == expected
        expected = link(line)


async def test_rotation_through_the_log_loses_no_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(FileSink(path, max_bytes=20_000, keep=500), batch_size=37)
    await log.start()
    for i in range(3_000):
        log.emit(make_record(i))
        if i % 500 == 0:
            await log.flush()  # vary batch boundaries against rotation points
    await log.close()
    assert request_ids(path) == [f"req-{i:06d}" for i in range(3_000)]
    assert len(file_names(tmp_path)) > 50  # many rotations happened
    assert_chain(trail_lines(path))
    assert verify(path)[0]
    assert (log.written, log.lost) == (3_000, 0)


async def test_records_keep_their_order_and_get_dropped_then_prev_last() -> None:
    sink = MemorySink()
    log = AuditLog(sink)
    log.emit(make_record(0))
    log.emit({**make_record(1), "prev": "forged", "dropped": 99, "writer": "x", "seq": 7})
    await log.close()
    first, second = records(sink.lines)
    assert list(first) == [*make_record(0), "writer", "seq", "prev"]
    # the caller's writer, seq, prev and dropped are replaced
    assert list(second) == [*make_record(1), "writer", "seq", "prev"]
    assert (first["writer"], first["seq"], second["seq"]) == (log.writer, 1, 2)
    assert_chain(sink.lines)
    assert sink.closed


async def test_chain_continues_after_reopening_the_trail(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    for run in range(3):
        log = AuditLog(FileSink(path, max_bytes=1_500, keep=50))
        await log.start()
        for i in range(run * 10, run * 10 + 10):
            log.emit(make_record(i))
        await log.close()
    lines = trail_lines(path)
    assert len(lines) == 30
    assert_chain(lines)
    ok, report = verify(path)
    assert ok, report
    assert "30 records" in report


async def test_chain_continues_on_a_redis_stream(redis_url: str) -> None:
    for run in range(2):
        log = AuditLog(sink_from_uri(f"{redis_url}?stream=chain"))
        await log.start()
        for i in range(run * 5, run * 5 + 5):
            log.emit(make_record(i))
        await log.close()
    lines = await stream_lines(redis_url, "chain")
    assert [r["request_id"] for r in records(lines)] == [f"req-{i:06d}" for i in range(10)]
    assert_chain(lines)


async def test_emit_before_start_waits_in_the_queue_and_close_drains_it() -> None:
    sink = MemorySink()
    log = AuditLog(sink, batch_size=100)
    for i in range(2_000):
        log.emit(make_record(i))
    assert sink.lines == []
    await log.close()  # never started: close starts, drains everything, then closes
    assert [r["request_id"] for r in records(sink.lines)] == [f"req-{i:06d}" for i in range(2_000)]
    assert sink.calls == 20  # batched, not a write per record
    assert sink.closed


async def test_overflow_is_counted_logged_once_per_interval_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    sink = MemorySink()
    log = AuditLog(sink, queue_size=3, monotonic=lambda: now[0], warn_every=10.0)
    caplog.set_level(logging.WARNING, logger="guardrail.audit")
    for i in range(10):  # not started: 3 fit, 7 overflow
        log.emit(make_record(i))
    warnings = [r for r in caplog.records if r.name == "guardrail.audit"]
    assert len(warnings) == 1  # a flood does not flood the log
    assert "1 record(s) lost" in warnings[0].getMessage()
    assert "queue full" in warnings[0].getMessage()
    now[0] = 11.0
    log.emit(make_record(10))  # still full: the next warning carries the suppressed ones
    assert "7 record(s) lost" in caplog.records[-1].getMessage()
    await log.flush()
    log.emit(make_record(11))
    await log.close()
    got = records(sink.lines)
    assert [r["request_id"] for r in got] == [f"req-{i:06d}" for i in (0, 1, 2, 11)]
    assert "dropped" not in got[2]
    assert got[3]["dropped"] == 8
    assert list(got[3])[-2:] == ["dropped", "prev"]
    assert log.lost == 8
    assert_chain(sink.lines)


async def test_sink_failure_is_retried_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    sink = MemorySink(failures=2)
    sleeps = Sleeps()
    log = AuditLog(sink, sleep=sleeps, backoff=0.1, retries=4)
    caplog.set_level(logging.WARNING, logger="guardrail.audit")
    for i in range(5):
        log.emit(make_record(i))
    await log.close()
    assert sleeps.calls == [0.1, 0.2]
    assert len(records(sink.lines)) == 5
    assert_chain(sink.lines)
    assert log.lost == 0
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2
    assert "sink unavailable" in retries[0].getMessage()


async def test_backoff_is_bounded() -> None:
    sink = MemorySink(failures=6)
    sleeps = Sleeps()
    log = AuditLog(sink, sleep=sleeps, backoff=0.5, max_backoff=1.5, retries=6)
    log.emit(make_record(0))
    await log.close()
    assert sleeps.calls == [0.5, 1.0, 1.5, 1.5, 1.5, 1.5]
    assert len(sink.lines) == 1


async def test_while_serving_a_failing_sink_is_retried_as_long_as_the_queue_has_room() -> None:
    sink = MemorySink(failures=40)
    sleeps = Sleeps()
    log = AuditLog(sink, sleep=sleeps, retries=2, backoff=0.1, max_backoff=2.0)
    for i in range(3):
        log.emit(make_record(i))
    await log.flush()
    assert [r["request_id"] for r in records(sink.lines)] == [f"req-{i:06d}" for i in range(3)]
    assert log.lost == 0
    assert len(sleeps.calls) == 40 and max(sleeps.calls) == 2.0  # bounded backoff
    await log.close()


async def test_with_its_queue_full_a_failing_batch_is_given_up_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = MemorySink(failures=3)
    log = AuditLog(sink, retries=2, queue_size=1)
    extra = iter(range(10, 20))

    async def sleep(seconds: float) -> None:
        log.emit(make_record(next(extra)))  # traffic goes on while the writer waits

    log._sleep = sleep
    caplog.set_level(logging.WARNING, logger="guardrail.audit")
    log.emit(make_record(0))
    await log.flush()  # 0 fails; 10 fills the queue, 11 overflows; 0 is given up after 3 tries
    assert any("giving up on 1 record(s)" in r.getMessage() for r in caplog.records)
    log.emit(make_record(12))
    await log.close()
    got = records(sink.lines)
    assert [(r["request_id"], r.get("dropped")) for r in got] == [
        ("req-000010", 1),  # record 0, given up
        ("req-000012", 1),  # record 11, the overflow
    ]
    assert log.lost == 2
    assert got[0]["prev"] == GENESIS  # the chain links what reached the sink, nothing else
    assert_chain(sink.lines)


async def test_at_close_a_sink_that_keeps_refusing_is_given_up_after_the_retries() -> None:
    sink = MemorySink(failures=3)
    log = AuditLog(sink, sleep=Sleeps(), retries=2)
    for i in range(3):
        log.emit(make_record(i))
    await log.close()
    assert sink.lines == []
    assert log.lost == 3


async def test_a_partial_write_is_not_duplicated_on_retry() -> None:
    sink = MemorySink(failures=1, partial=2)
    log = AuditLog(sink, sleep=Sleeps())
    for i in range(5):
        log.emit(make_record(i))
    await log.close()
    assert [r["request_id"] for r in records(sink.lines)] == [f"req-{i:06d}" for i in range(5)]
    assert_chain(sink.lines)


async def test_emit_after_close_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    sink = MemorySink()
    log = AuditLog(sink)
    await log.start()
    log.emit(make_record(0))
    assert not log.closed
    await log.close()
    assert log.closed
    await log.close()  # idempotent
    caplog.set_level(logging.WARNING, logger="guardrail.audit")
    log.emit(make_record(1))
    assert log.lost == 1
    assert any("closed" in r.getMessage() for r in caplog.records)
    assert len(sink.lines) == 1


async def test_losses_after_the_last_record_are_logged_at_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = AuditLog(MemorySink(), queue_size=1)
    caplog.set_level(logging.WARNING, logger="guardrail.audit")
    log.emit(make_record(0))
    log.emit(make_record(1))
    await log.close()
    assert any(
        "cannot show them" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records
    )


async def test_an_unserialisable_record_is_counted_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = MemorySink()
    log = AuditLog(sink)
    log.emit(make_record(0, score=object()))
    log.emit(make_record(1))
    await log.close()
    (only,) = records(sink.lines)
    assert only["dropped"] == 1
    assert any("req-000000" in r.getMessage() for r in caplog.records)


async def test_without_hash_chain_there_is_no_prev() -> None:
    sink = MemorySink()
    log = AuditLog(sink, hash_chain=False)
    log.emit(make_record(0))
    await log.close()
    assert "prev" not in records(sink.lines)[0]


async def test_an_unreadable_trail_end_is_retried_then_restarts_the_chain(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BlindSink(MemorySink):
        async def last_line(self) -> str | None:
            raise ConnectionError("down")

    sink = BlindSink()
    sleeps = Sleeps()
    log = AuditLog(sink, sleep=sleeps, retries=2, backoff=1.0)
    await log.start()  # does not fail the application's startup
    log.emit(make_record(0))
    await log.close()
    assert sleeps.calls == [1.0, 2.0]
    assert records(sink.lines)[0]["prev"] == GENESIS
    assert any("verify will flag" in r.getMessage() for r in caplog.records)


async def test_stdout_sink_through_the_log(capsys: pytest.CaptureFixture[str]) -> None:
    log = AuditLog(StdoutSink())
    log.emit(make_record(0, path="/v1/ünïcode"))
    await log.close()
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1
    assert json.loads(out)["path"] == "/v1/ünïcode"
    assert json.loads(out)["prev"] == GENESIS


async def test_redis_stream_shows_every_record(redis_url: str) -> None:
    log = AuditLog(sink_from_uri(redis_url), batch_size=64)
    await log.start()
    for i in range(500):
        log.emit(make_record(i))
    await log.close()
    lines = await stream_lines(redis_url, "guardrail:audit")
    assert [r["request_id"] for r in records(lines)] == [f"req-{i:06d}" for i in range(500)]
    assert_chain(lines)


class HalfWrites:
    """Wraps the sink's file: the first write puts half its bytes on disk, then fails (ENOSPC)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.failed = False

    def write(self, data: memoryview) -> int:
        if not self.failed:
            self.failed = True
            self.real.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")
        return int(self.real.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_a_failed_file_write_leaves_no_half_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path)
    log = AuditLog(sink, sleep=Sleeps())
    log.emit(make_record(0))
    await log.flush()
    sink._file = HalfWrites(sink._file)  # type: ignore[assignment]
    for i in range(1, 6):
        log.emit(make_record(i))
    await log.close()
    assert request_ids(path) == [f"req-{i:06d}" for i in range(6)]
    assert verify(path)[0]


async def test_a_failed_rotation_is_retried_without_duplicates(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path, max_bytes=2_000, keep=50)
    rotate = sink._rotate
    calls = [0]

    def flaky_rotate() -> None:
        calls[0] += 1
        if calls[0] == 2:
            raise PermissionError("rename refused")
        rotate()

    monkeypatch.setattr(sink, "_rotate", flaky_rotate)
    log = AuditLog(sink, sleep=Sleeps())
    for i in range(20):
        log.emit(make_record(i))
    await log.close()
    assert calls[0] > 3
    assert request_ids(path) == [f"req-{i:06d}" for i in range(20)]
    assert verify(path)[0]
    assert log.lost == 0


# --- a sink that stops answering ---------------------------------------------------------------


class StuckSink(MemorySink):
    """Answers nothing: every call waits forever (a sink client without timeouts)."""

    def __init__(
        self, *, stuck_write: bool = True, stuck_read: bool = True, stuck_close: bool = False
    ) -> None:
        super().__init__()
        self.stuck_write, self.stuck_read, self.stuck_close = stuck_write, stuck_read, stuck_close
        self.forever = asyncio.Event()
        self.writing = asyncio.Event()  # set once a write is stuck

    async def write(self, lines: Sequence[str]) -> None:
        if self.stuck_write:
            self.writing.set()
            await self.forever.wait()
        await super().write(lines)

    async def last_line(self) -> str | None:
        if self.stuck_read:
            await self.forever.wait()
        return await super().last_line()

    async def close(self) -> None:
        if self.stuck_close:
            await self.forever.wait()
        await super().close()


async def test_a_trail_end_that_never_answers_does_not_hold_up_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = StuckSink(stuck_write=False)
    sleeps = Sleeps()
    log = AuditLog(sink, timeout=0.01, retries=2, sleep=sleeps)
    caplog.set_level(logging.WARNING, logger="guardrail.audit")
    async with asyncio.timeout(5):
        await log.start()  # gives up after `timeout`: the chain stays unknown
        assert any("no answer within 0.01s" in r.getMessage() for r in caplog.records)
        log.emit(make_record(0))
        await log.close()  # read again (3 tries) before the first batch, then genesis
    assert sleeps.calls == [0.05, 0.1]
    (only,) = records(sink.lines)
    assert only["prev"] == GENESIS
    assert log.written == 1 and log.lost == 0
    assert any("verify will flag" in r.getMessage() for r in caplog.records)


async def test_close_gives_up_on_a_sink_that_never_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = StuckSink(stuck_read=False, stuck_close=True)
    log = AuditLog(sink, timeout=0.01, close_timeout=0.05, queue_size=4, batch_size=2)
    caplog.set_level(logging.WARNING, logger="guardrail.audit")
    await log.start()
    log.emit(make_record(0))
    log.emit(make_record(1))
    await sink.writing.wait()  # the writer took records 0 and 1 and is stuck writing them
    for i in range(2, 6):
        log.emit(make_record(i))  # the queue is full: close() cannot even queue its stop mark
    assert log.lost == 0
    async with asyncio.timeout(5):
        await log.close()
    assert log.closed
    assert sink.lines == []
    assert log.written == 0
    assert log.lost == 6
    messages = [r.getMessage() for r in caplog.records]
    assert any("within 0.05s; gave up on 6 record(s)" in m for m in messages)
    assert any("did not close within" in m for m in messages)
    assert any("6 record(s) lost after the last written record" in m for m in messages)
    async with asyncio.timeout(5):
        await log.flush()  # nothing left unaccounted in the queue


async def test_a_redis_stream_that_never_answers_holds_up_neither_start_nor_close(
    silent_server: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = sink_from_uri(f"redis://127.0.0.1:{silent_server}/0?stream=s&timeout=0.02")
    log = AuditLog(sink, batch_size=2, retries=1, sleep=Sleeps())
    caplog.set_level(logging.WARNING, logger="guardrail.audit")
    async with asyncio.timeout(10):
        await log.start()
        for i in range(5):
            log.emit(make_record(i))
        await log.close()
    assert log.closed
    assert (log.written, log.lost) == (0, 5)
    messages = [r.getMessage() for r in caplog.records]
    assert any("cannot read the end of the trail yet" in m and "Timeout" in m for m in messages)
    # the first batch goes through its retries; the sink is then known down: the rest is
    # counted without being tried, so shutdown ends after one batch's worth of timeouts
    assert sum("giving up on 2 record(s)" in m for m in messages) == 1
    assert any("3 record(s) lost (audit sink down at shutdown; not tried)" in m for m in messages)


# --- one bad record never takes its batch down ------------------------------------------------


async def test_a_lone_surrogate_is_written_escaped_and_the_chain_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(FileSink(path))
    for i in range(100):
        log.emit(make_record(i, path="/v1/\udce9" if i == 50 else f"/ok/{i}"))
    await log.close()
    assert (log.written, log.lost) == (100, 0)
    raw = path.read_bytes()
    raw.decode("utf-8")  # valid UTF-8 throughout
    assert b'"path":"/v1/\\udce9"' in raw
    assert json.loads(trail_lines(path)[50])["path"] == "/v1/\udce9"  # reads back the same
    assert verify(path) == (
        True,
        f"OK: 100 records in 1 file(s) by writer {log.writer}, hash chain intact, starts at "
        "genesis",
    )


async def test_a_record_failing_in_any_way_costs_only_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(100_000):  # json.dumps raises RecursionError, not TypeError/ValueError
        cursor["a"] = cursor = {}

    class Exploding(Mapping[str, Any]):  # a mapping that cannot even be copied
        def __init__(self, record: dict[str, Any]) -> None:
            self.record = record

        def __getitem__(self, key: str) -> Any:
            return self.record[key]

        def __len__(self) -> int:
            return len(self.record)

        def __iter__(self) -> Iterator[str]:
            raise RuntimeError("boom")

    sink = MemorySink()
    log = AuditLog(sink)
    log.emit(make_record(0))
    log.emit(make_record(1, signals=deep))
    log.emit(Exploding(make_record(2)))
    log.emit(make_record(3))
    await log.close()
    got = records(sink.lines)
    assert [r["request_id"] for r in got] == ["req-000000", "req-000003"]
    assert got[1]["dropped"] == 2
    assert (log.written, log.lost) == (2, 2)
    assert_chain(sink.lines)
    assert any("req-000001" in r.getMessage() for r in caplog.records)


# --- {pid}: one trail per worker process -------------------------------------------------------

_WORKER = """
import asyncio, sys
from guardrail.audit import AuditLog, sink_from_uri

async def main():
    log = AuditLog(sink_from_uri(sys.argv[1]))
    await log.start()
    for i in range(3):
        log.emit({"request_id": f"{sys.argv[2]}{i}", "action": "limit"})
        await log.flush()
    await log.close()

asyncio.run(main())
"""


def test_workers_sharing_a_pid_sink_uri_each_keep_a_verifiable_trail(tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/guardrail-audit-{{pid}}.jsonl"
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, uri, name]) for name in ("A", "B")]
    for worker in workers:
        assert worker.wait(timeout=60) == 0
    trails = sorted(tmp_path.iterdir())
    assert [p.name for p in trails] == sorted(
        f"guardrail-audit-{worker.pid}.jsonl" for worker in workers
    )
    for trail in trails:
        ok, message = verify(trail)
        assert ok, message
        assert "3 records" in message
