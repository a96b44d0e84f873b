from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from guardrail.audit.sinks import (
    DEFAULT_STREAM,
    FileSink,
    RedisStreamSink,
    StdoutSink,
    sink_from_uri,
)
from guardrail.errors import AuditError

from audit_helpers import (
    file_names,
    stream_lines,
)


def lines_of(file: Path) -> list[str]:
    return file.read_text(encoding="utf-8").splitlines()


# --- sink_from_uri -----------------------------------------------------------------------------


def test_file_uri_with_two_slashes_is_a_relative_path() -> None:
    sink = sink_from_uri("file://guardrail-audit.jsonl", max_bytes=1234, keep=3)
    assert isinstance(sink, FileSink)
    assert sink.path == Path("guardrail-audit.jsonl")
    assert (sink.max_bytes, sink.keep) == (1234, 3)


def test_file_uri_with_three_slashes_is_absolute(tmp_path: Path) -> None:
    sink = sink_from_uri(f"file://{tmp_path}/audit.jsonl")
    assert isinstance(sink, FileSink)
    assert sink.path == tmp_path / "audit.jsonl"
    assert sink.path.is_absolute()


def test_stdout_uri() -> None:
    assert isinstance(sink_from_uri("stdout://"), StdoutSink)


async def test_redis_uri_reads_stream_and_maxlen() -> None:
    sink = sink_from_uri("redis://127.0.0.1:6390/2?stream=audit:x&maxlen=1000")
    assert isinstance(sink, RedisStreamSink)
    assert (sink.stream, sink.maxlen) == ("audit:x", 1000)
    await sink.close()
    default = sink_from_uri("rediss://127.0.0.1:6390/0")
    assert isinstance(default, RedisStreamSink)
    assert (default.stream, default.maxlen) == (DEFAULT_STREAM, None)
    await default.close()


@pytest.mark.parametrize(
    "uri",
    [
        "ftp://auditor:hunter2@example.com/audit",
        "kafka://auditor:hunter2@broker:9092",
        "audit.jsonl",
        "file://",
        "stdout://somewhere",
        "redis://auditor:hunter2@h:6379/0?maxlen=lots",
        "redis://auditor:hunter2@h:6379/0?maxlen=0",
    ],
)
def test_bad_uris_are_refused_without_leaking_the_password(uri: str) -> None:
    with pytest.raises(AuditError) as caught:
        sink_from_uri(uri)
    assert "hunter2" not in str(caught.value)
    if "@" in uri:
        assert "auditor:***@" in str(caught.value)


def test_a_password_in_the_query_is_masked_too() -> None:
    with pytest.raises(AuditError) as caught:
        sink_from_uri("redis://h:6379/0?password=hunter2&maxlen=lots")
    assert "hunter2" not in str(caught.value)
    assert "password=***" in str(caught.value)


async def test_redis_uri_reads_the_timeout() -> None:
    default = sink_from_uri("redis://127.0.0.1:6390/0")
    tuned = sink_from_uri("redis://127.0.0.1:6390/0?timeout=0.5&stream=s")
    assert isinstance(default, RedisStreamSink) and isinstance(tuned, RedisStreamSink)
    assert (default.timeout, tuned.timeout, tuned.stream) == (1.0, 0.5, "s")
    await default.close()
    await tuned.close()


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan", ""])
def test_redis_uri_refuses_a_bad_timeout(value: str) -> None:
    with pytest.raises(AuditError, match="timeout must be a positive number"):
        sink_from_uri(f"redis://:hunter2@127.0.0.1:6390/0?timeout={value}")


def test_file_uri_pid_placeholder_names_this_process(tmp_path: Path) -> None:
    sink = sink_from_uri(f"file://{tmp_path}/audit-{{pid}}.jsonl")
    assert isinstance(sink, FileSink)
    assert sink.path == tmp_path / f"audit-{os.getpid()}.jsonl"


def test_file_sink_refuses_nonsense_rotation() -> None:
    with pytest.raises(AuditError, match="max_bytes"):
        FileSink("x", max_bytes=0)
    with pytest.raises(AuditError, match="keep"):
        FileSink("x", keep=0)


# --- FileSink ----------------------------------------------------------------------------------


async def test_file_sink_appends_and_reports_its_last_line(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"  # parent directory created on first write
    sink = FileSink(path)
    assert await sink.last_line() is None
    await sink.write(['{"n":1}', '{"n":2,"s":"é"}'])
    await sink.write([])
    assert await sink.last_line() == '{"n":2,"s":"é"}'
    await sink.close()
    reopened = FileSink(path)
    await reopened.write(['{"n":3}'])
    await reopened.close()
    assert lines_of(path) == ['{"n":1}', '{"n":2,"s":"é"}', '{"n":3}']


async def test_file_sink_rotation_keeps_whole_lines_and_drops_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path, max_bytes=100, keep=2)
    lines = [json.dumps({"n": i, "pad": "x" * 20}) for i in range(40)]  # 37 bytes a line
    for start in range(0, 40, 3):
        await sink.write(lines[start : start + 3])
    await sink.close()
    files = [path.with_name("audit.jsonl.2"), path.with_name("audit.jsonl.1"), path]
    assert file_names(tmp_path) == sorted(p.name for p in files)
    kept = [line for file in files for line in lines_of(file)]
    for file in files:
        assert file.stat().st_size <= 100
        assert file.read_bytes().endswith(b"\n")
    assert kept == lines[-len(kept) :]  # the newest lines, contiguous: only the oldest file went
    assert len(kept) == 6  # two 37-byte lines fit in 100 bytes; three files kept


async def test_file_sink_writes_an_oversized_line_whole_into_a_fresh_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path, max_bytes=50, keep=5)
    big = json.dumps({"big": "y" * 200})
    await sink.write(['{"n":1}', big, '{"n":2}'])
    await sink.close()
    assert lines_of(path.with_name("audit.jsonl.2")) == ['{"n":1}']
    assert lines_of(path.with_name("audit.jsonl.1")) == [big]
    assert lines_of(path) == ['{"n":2}']


async def test_file_sink_last_line_falls_back_to_the_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.with_name("audit.jsonl.1").write_text('{"n":1}\n{"n":2}\n')
    path.write_text("")  # crash between rotation and the first write of the new file
    assert await FileSink(path).last_line() == '{"n":2}'


async def test_file_sink_ends_a_half_written_line_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"n":1}\n{"n":2, "cut')
    sink = FileSink(path)
    assert await sink.last_line() == '{"n":2, "cut'
    await sink.write(['{"n":3}'])
    await sink.close()
    assert lines_of(path) == ['{"n":1}', '{"n":2, "cut', '{"n":3}']


async def test_file_sink_last_line_reads_long_lines_backwards(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    long = json.dumps({"s": "z" * 20_000})
    path.write_text(f'{{"n":1}}\n{long}\n')
    assert await FileSink(path).last_line() == long


# --- StdoutSink --------------------------------------------------------------------------------


async def test_stdout_sink_writes_one_line_per_record(capsys: pytest.CaptureFixture[str]) -> None:
    sink = StdoutSink()
    await sink.write(['{"n":1}', '{"s":"ü"}'])
    await sink.write([])
    assert await sink.last_line() is None
    await sink.close()
    assert capsys.readouterr().out == '{"n":1}\n{"s":"ü"}\n'


async def test_file_sink_pid_placeholder_writes_and_rotates_this_process_trail(
    tmp_path: Path,
) -> None:
    sink = FileSink(tmp_path / "audit-{pid}.jsonl", max_bytes=20, keep=2)
    await sink.write(['{"n":1,"pad":"xxxx"}', '{"n":2,"pad":"xxxx"}'])
    assert await sink.last_line() == '{"n":2,"pad":"xxxx"}'
    await sink.close()
    mine = f"audit-{os.getpid()}.jsonl"
    assert file_names(tmp_path) == [mine, f"{mine}.1"]
    assert lines_of(tmp_path / mine) == ['{"n":2,"pad":"xxxx"}']


# --- RedisStreamSink ---------------------------------------------------------------------------


async def test_redis_sink_that_never_answers_fails_within_its_timeout(silent_server: int) -> None:
    sink = sink_from_uri(f"redis://:hunter2@127.0.0.1:{silent_server}/0?timeout=0.05")
    try:
        async with asyncio.timeout(5):  # a hang fails the test instead of blocking it
            with pytest.raises(AuditError, match="Timeout") as caught:
                await sink.last_line()
            assert "hunter2" not in str(caught.value)
            with pytest.raises(AuditError, match="Timeout"):
                await sink.write(['{"n":1}'])
    finally:
        async with asyncio.timeout(5):
            await sink.close()


async def test_redis_sink_adds_every_line_to_the_stream(redis_url: str) -> None:
    sink = sink_from_uri(f"{redis_url}?stream=test:audit")
    assert await sink.last_line() is None
    lines = [json.dumps({"n": i, "s": "é"}, ensure_ascii=False) for i in range(300)]
    await sink.write(lines[:100])
    await sink.write(lines[100:])
    assert await sink.last_line() == lines[-1]
    await sink.close()
    assert await stream_lines(redis_url, "test:audit") == lines
    client = aioredis.from_url(redis_url)
    try:
        stats = await client.info("commandstats")
        assert stats["cmdstat_xadd"]["calls"] == 300
    finally:
        await client.aclose()


async def test_redis_sink_trims_approximately_with_maxlen(redis_url: str) -> None:
    sink = sink_from_uri(f"{redis_url}?maxlen=10")
    await sink.write([json.dumps({"n": i}) for i in range(1000)])
    await sink.close()
    client = aioredis.from_url(redis_url)
    try:
        length = await client.xlen(DEFAULT_STREAM)
    finally:
        await client.aclose()
    assert 10 <= length < 1000


async def test_redis_sink_failure_is_an_audit_error_without_the_password() -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sink = sink_from_uri(f"redis://:hunter2@127.0.0.1:{port}/0")
    try:
        with pytest.raises(AuditError) as caught:
            await sink.write(['{"n":1}'])
        assert "hunter2" not in str(caught.value)
        with pytest.raises(AuditError):
            await sink.last_line()
    finally:
        await sink.close()


async def test_file_sink_follows_an_outside_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path)
    await sink.write(['{"n":1}'])
    rename(path, tmp_path / "audit.jsonl.old")  # logrotate without copytruncate
    await sink.write(['{"n":2}'])
    await sink.close()
    assert lines_of(tmp_path / "audit.jsonl.old") == ['{"n":1}']
    assert lines_of(path) == ['{"n":2}']


def rename(source: Path, target: Path) -> None:
    source.rename(target)


# --- idempotent appends, and writing without the event loop ----------------------------------


async def test_redis_append_skips_what_the_writer_already_appended(redis_url: str) -> None:
    sink = RedisStreamSink(f"{redis_url}?stream=once")
    try:
        await sink.append("w1", 1, ["a", "b", "c"])
        await sink.append("w1", 1, ["a", "b", "c"])  # re-sent after a timeout that had landed
        await sink.append("w1", 2, ["b", "c", "d"])  # overlapping the last one
        await sink.append("w2", 1, ["x"])  # another writer numbers its own lines
    finally:
        await sink.close()
    assert await stream_lines(redis_url, "once") == ["a", "b", "c", "d", "x"]
    client = aioredis.from_url(redis_url)
    try:
        assert await client.get("once:seq:w1") == b"4"
        assert 0 < await client.ttl("once:seq:w1") <= 7 * 86400  # a restarted writer's goes away
    finally:
        await client.aclose()


async def test_redis_append_trims_with_maxlen(redis_url: str) -> None:
    sink = RedisStreamSink(f"{redis_url}?stream=short&maxlen=10")
    try:
        for first in range(1, 1001, 100):
            await sink.append("w", first, [f"line {n}" for n in range(first, first + 100)])
    finally:
        await sink.close()
    assert 10 <= len(await stream_lines(redis_url, "short")) < 1000


async def test_redis_append_sync_is_as_idempotent(redis_url: str) -> None:
    sink = RedisStreamSink(f"{redis_url}?stream=sync")
    try:
        await sink.append("w", 1, ["a", "b"])
        await asyncio.to_thread(sink.append_sync, "w", 2, ["b", "c"])
    finally:
        await sink.close()
    assert await stream_lines(redis_url, "sync") == ["a", "b", "c"]


async def test_redis_append_failure_is_an_audit_error(silent_server: int) -> None:
    sink = RedisStreamSink(f"redis://127.0.0.1:{silent_server}/0?timeout=0.1")
    with pytest.raises(AuditError):
        await sink.append("w", 1, ["a"])
    with pytest.raises(AuditError):
        sink.append_sync("w", 1, ["a"])
    await sink.close()


def test_file_sink_writes_and_reads_without_the_event_loop(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "audit.jsonl")
    assert sink.last_line_sync() is None
    sink.write_sync(["one", "two"])
    assert sink.last_line_sync() == "two"
    sink.close_sync()
    assert lines_of(tmp_path / "audit.jsonl") == ["one", "two"]


def test_stdout_sink_writes_without_the_event_loop(capsys: pytest.CaptureFixture[str]) -> None:
    StdoutSink().write_sync(["one"])
    assert capsys.readouterr().out == "one\n"
