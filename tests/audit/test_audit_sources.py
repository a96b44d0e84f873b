"""Reading several trails: files with their rotations, globs, Redis streams; merged by time."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from guardrail.audit.reader import summary, tail
from guardrail.audit.record import format_ts
from guardrail.audit.sinks import FileSink, sink_from_uri
from guardrail.audit.sources import FileTrail, StreamTrail, sources, trail_bases
from guardrail.audit.verify import verify
from guardrail.audit.writer import AuditLog
from guardrail.errors import AuditError

from audit_helpers import T0, make_record


def write(path: Path, times: list[float], max_bytes: int = 100_000_000) -> None:
    async def run() -> None:
        log = AuditLog(FileSink(path, max_bytes=max_bytes, keep=50))
        for n, at in enumerate(times):
            log.emit(make_record(n, at=at, request_id=f"{path.name}-{n}"))
        await log.close()

    asyncio.run(run())


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """Two workers' trails, interleaved in time; the first rotated."""
    write(tmp_path / "audit-101.jsonl", [T0 + 2 * n for n in range(10)], max_bytes=2_000)
    write(tmp_path / "audit-202.jsonl", [T0 + 2 * n + 1 for n in range(10)])
    return tmp_path


def test_a_glob_reads_each_trail_once_with_its_rotations(fleet: Path) -> None:
    assert (fleet / "audit-101.jsonl.1").exists()
    found = sources([f"{fleet}/audit-*.jsonl*"])
    assert found == [FileTrail(fleet / "audit-101.jsonl"), FileTrail(fleet / "audit-202.jsonl")]
    # the same trail named twice is read once
    assert len(sources([fleet / "audit-101.jsonl", f"{fleet}/audit-101*"])) == 1


def test_a_numbered_name_is_a_rotation_only_beside_its_base(tmp_path: Path) -> None:
    assert trail_bases(["a/audit.4242"]) == [Path("a/audit.4242")]  # file://audit.{pid}
    assert trail_bases(["a/x.jsonl", "a/x.jsonl.3"]) == [Path("a/x.jsonl")]


def test_names_that_match_nothing_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no audit trail matches"):
        sources([f"{tmp_path}/nothing-*.jsonl"])
    with pytest.raises(AuditError, match="no audit trail at"):
        sources([tmp_path / "missing.jsonl"])


def test_the_file_sinks_own_uri_names_its_trails(
    fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the policy's ``audit.sink`` says, pasted on the command line as it is: ``{pid}``
    stands for every worker's file."""
    from guardrail.cli import main

    assert main(["audit", "verify", f"file://{fleet}/audit-{{pid}}.jsonl"]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first.startswith(f"{fleet}/audit-101.jsonl: OK: 10 records in ")
    assert second.startswith(f"{fleet}/audit-202.jsonl: OK: 10 records in ")
    assert main(["audit", "tail", f"file://{fleet}/audit-202.jsonl"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 10


def test_verify_reports_each_trail(fleet: Path) -> None:
    ok, report = verify([f"{fleet}/audit-*.jsonl*"])
    assert ok, report
    first, second = report.splitlines()
    assert first.startswith(f"{fleet}/audit-101.jsonl: OK: 10 records in ")
    assert second.startswith(f"{fleet}/audit-202.jsonl: OK: 10 records in 1 file(s) by writer")


def test_summary_counts_every_trail_and_writer(fleet: Path) -> None:
    data = summary([f"{fleet}/audit-*.jsonl*"], None, T0 + 100)
    assert data["records"] == 20
    assert len(data["writers"]) == 2 and sum(data["writers"].values()) == 20
    assert (data["first"], data["last"]) == (format_ts(T0), format_ts(T0 + 19))


def test_tail_merges_the_trails_by_time(fleet: Path) -> None:
    out = io.StringIO()
    tail([str(fleet / "audit-101.jsonl"), str(fleet / "audit-202.jsonl")], out=out)
    assert [line[:24] for line in out.getvalue().splitlines()] == [
        format_ts(T0 + n) for n in range(20)
    ]
    out = io.StringIO()
    tail([f"{fleet}/audit-*.jsonl"], out=out, lines=3)
    assert [line[:24] for line in out.getvalue().splitlines()] == [
        format_ts(T0 + n) for n in (17, 18, 19)
    ]


def test_tail_follows_every_trail_and_a_new_worker(fleet: Path) -> None:
    polls = [0]

    def sleep(_: float) -> None:
        polls[0] += 1
        if polls[0] == 1:
            write(fleet / "audit-101.jsonl", [T0 + 31])
            write(fleet / "audit-202.jsonl", [T0 + 30])
            write(fleet / "audit-303.jsonl", [T0 + 32])  # a worker started since

    out = io.StringIO()
    tail([f"{fleet}/audit-*.jsonl"], follow=True, out=out, sleep=sleep, stop=lambda: polls[0] == 1)
    stamps = [line[:24] for line in out.getvalue().splitlines()]
    assert stamps[-3:] == [format_ts(T0 + n) for n in (30, 31, 32)]
    assert len(stamps) == 23


async def test_a_redis_stream_is_read_tailed_and_verified(redis_url: str) -> None:
    uri = f"{redis_url}?stream=fleet"
    for worker in range(2):
        log = AuditLog(sink_from_uri(uri))
        await log.start()
        for n in range(3):
            log.emit(make_record(n, at=T0 + 2 * n + worker, request_id=f"w{worker}-{n}"))
        await log.close()
    ok, report = await asyncio.to_thread(verify, uri)
    assert ok, report
    assert report.startswith(f"OK: 6 records in {uri} by 2 writers")
    trail = StreamTrail(uri)
    locations = [location for location, _ in trail.lines()]
    assert [location.line for location in locations] == list(range(1, 7))
    assert str(locations[0]).startswith(f"{uri} #")
    assert trail.last_id() == locations[-1].entry
    out = io.StringIO()
    await asyncio.to_thread(tail, uri, False, out)
    assert len(out.getvalue().splitlines()) == 6
    data = await asyncio.to_thread(summary, [uri], None, T0 + 100)
    assert (data["records"], len(data["writers"]), data["files"]) == (6, 2, [uri])
    with pytest.raises(AuditError, match="no audit stream 'absent'"):
        sources([f"{redis_url}?stream=absent"])


async def test_a_trail_named_by_env_keeps_its_password_off_the_command_line(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``env:NAME`` (or ``file:PATH``) stands for a trail's URI: a Redis password in argv
    shows in ``ps`` to every user of the host."""
    from guardrail.cli import main

    uri = f"{redis_url}?stream=named"
    log = AuditLog(sink_from_uri(uri))
    await log.start()
    log.emit(make_record(0, at=T0, request_id="r-0"))
    await log.close()
    monkeypatch.setenv("AUDIT_TRAIL", uri)
    assert await asyncio.to_thread(main, ["audit", "verify", "env:AUDIT_TRAIL"]) == 0
    assert f"OK: 1 records in {uri}" in capsys.readouterr().out
    monkeypatch.delenv("AUDIT_TRAIL")
    with pytest.raises(SystemExit) as refused:
        await asyncio.to_thread(main, ["audit", "tail", "env:AUDIT_TRAIL"])
    assert refused.value.code == 2
    assert "environment variable 'AUDIT_TRAIL' is not set" in capsys.readouterr().err


def test_a_location_read_from_elsewhere_is_one_line_and_never_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from guardrail.cli import main

    trail = tmp_path / "audit.jsonl"
    trail.write_text('{"ts": 1, "action": "allow"}\n{"ts": 2, "action": "allow"}\n')
    monkeypatch.setenv("NOT_A_LOCATION", trail.read_text())
    for spec in ("env:NOT_A_LOCATION", f"file:{trail}"):
        with pytest.raises(SystemExit) as refused:
            main(["audit", "tail", spec])
        assert refused.value.code == 2
        err = capsys.readouterr().err
        assert "not one location" in err and "action" not in err, err
    # file:// is the file sink's URI, not a reference to a file holding a location
    assert main(["audit", "tail", f"file://{tmp_path}/absent.jsonl"]) == 1
    assert f"no audit trail at {tmp_path}/absent.jsonl" in capsys.readouterr().err


async def test_a_redis_stream_of_interleaved_writers_with_a_line_removed_is_broken(
    redis_url: str,
) -> None:
    import redis.asyncio as aioredis

    uri = f"{redis_url}?stream=cut"
    a, b = AuditLog(sink_from_uri(uri)), AuditLog(sink_from_uri(uri))
    await a.start()
    await b.start()
    for n in range(3):
        a.emit(make_record(n))
        await a.flush()
        b.emit(make_record(n))
        await b.flush()
    await a.close()
    await b.close()
    client = aioredis.from_url(redis_url)
    entries = await client.xrange("cut")
    await client.xdel("cut", entries[2][0])  # a's second record
    await client.aclose()
    ok, message = await asyncio.to_thread(verify, uri)
    assert not ok
    assert f"broken link in the chain of writer {a.writer}" in message
    assert json.loads(entries[4][1][b"record"])["writer"] == a.writer


async def test_tail_follows_a_redis_stream(redis_url: str) -> None:
    uri = f"{redis_url}?stream=live"
    sink = sink_from_uri(uri)
    await sink.write([json.dumps(make_record(0))])
    polls = [0]

    def sleep(_: float) -> None:
        polls[0] += 1
        asyncio.run(_add(uri, [make_record(1), make_record(2)]))

    out = io.StringIO()
    await asyncio.to_thread(tail, [uri], True, out, sleep=sleep, stop=lambda: polls[0] == 1)
    await sink.close()
    assert [line[:24] for line in out.getvalue().splitlines()] == [
        format_ts(T0 + n) for n in range(3)
    ]


async def _add(uri: str, records: list[dict[str, object]]) -> None:
    sink = sink_from_uri(uri)
    await sink.write([json.dumps(record) for record in records])
    await sink.close()
