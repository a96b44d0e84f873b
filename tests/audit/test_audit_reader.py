from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from guardrail.audit.reader import (
    Location,
    format_record,
    iter_records,
    render_summary,
    summary,
    tail,
    trail_files,
)
from guardrail.audit.record import encode, format_ts, link
from guardrail.audit.sinks import FileSink
from guardrail.audit.verify import verify
from guardrail.audit.writer import AuditLog
from guardrail.errors import AuditError

from audit_helpers import T0, make_record


def write_trail(
    path: Path, records: list[dict[str, object]], *, max_bytes: int = 100_000_000, keep: int = 10
) -> None:
    async def run() -> None:
        log = AuditLog(FileSink(path, max_bytes=max_bytes, keep=keep), writer="w")
        for record in records:
            log.emit(record)
        await log.close()

    asyncio.run(run())


def edit_lines(file: Path, change: Callable[[list[str]], None]) -> None:
    lines = file.read_text(encoding="utf-8").splitlines()
    change(lines)
    file.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    write_trail(path, [make_record(i) for i in range(10)])
    return path


# --- files -------------------------------------------------------------------------------------


def test_trail_files_are_oldest_first_and_ignore_other_names(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    for name in (
        "audit.jsonl",
        "audit.jsonl.1",
        "audit.jsonl.10",
        "audit.jsonl.2",
        "audit.jsonl.bak",
        "audit.jsonl.2.gz",
        "other.jsonl.1",
    ):
        (tmp_path / name).write_text("")
    assert [p.name for p in trail_files(path)] == [
        "audit.jsonl.10",
        "audit.jsonl.2",
        "audit.jsonl.1",
        "audit.jsonl",
    ]


def test_no_trail_is_an_audit_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no audit trail"):
        trail_files(tmp_path / "missing.jsonl")


def test_iter_records_reports_malformed_lines(trail: Path) -> None:
    edit_lines(trail, lambda lines: lines.insert(3, "{not json"))
    malformed: list[Location] = []
    got = list(iter_records(trail, malformed))
    assert len(got) == 10
    assert malformed == [Location(str(trail), 4)]
    assert got[3][0] == Location(str(trail), 5)


# --- verify ------------------------------------------------------------------------------------


def test_verify_accepts_an_intact_trail_across_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, [make_record(i) for i in range(50)], max_bytes=3_000, keep=100)
    assert len(trail_files(path)) > 5
    ok, report = verify(path)
    assert ok
    assert report.startswith("OK: 50 records in ")
    assert "starts at genesis" in report


def test_verify_names_the_line_after_a_tampered_one(trail: Path) -> None:
    edit_lines(trail, lambda lines: lines.__setitem__(4, lines[4].replace('"limit"', '"allow"', 1)))
    ok, message = verify(trail)
    assert not ok
    assert message.startswith(f"{trail}:6: broken link")
    assert f"({trail}:5)" in message
    assert f"{trail}:5 was altered" in message


def test_verify_finds_a_deleted_line(trail: Path) -> None:
    edit_lines(trail, lambda lines: lines.__delitem__(6))
    ok, message = verify(trail)
    assert not ok
    assert message.startswith(f"{trail}:7: broken link")
    assert "removed" in message


def test_verify_finds_reordered_lines(trail: Path) -> None:
    def swap(lines: list[str]) -> None:
        lines[2], lines[3] = lines[3], lines[2]

    edit_lines(trail, swap)
    ok, message = verify(trail)
    assert not ok
    assert message.startswith(f"{trail}:3: broken link")
    assert message.endswith(f"the line that belongs here is at {trail}:4: lines out of order")


def test_verify_finds_a_line_moved_to_the_end(trail: Path) -> None:
    def move(lines: list[str]) -> None:
        lines.append(lines.pop(1))

    edit_lines(trail, move)
    ok, message = verify(trail)
    assert not ok
    assert message.startswith(f"{trail}:2: broken link")
    assert f"belongs here is at {trail}:10" in message


def test_verify_follows_the_chain_across_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, [make_record(i) for i in range(20)], max_bytes=3_000, keep=100)
    rotated = path.with_name("audit.jsonl.1")
    edit_lines(rotated, lambda lines: lines.__setitem__(-1, lines[-1].replace("12.5", "99.0")))
    ok, message = verify(path)
    assert not ok
    assert message.startswith(f"{path}:1: broken link")  # the first line of the next file
    assert f"({rotated}:" in message


def test_verify_reports_a_malformed_line(trail: Path) -> None:
    edit_lines(trail, lambda lines: lines.__setitem__(2, lines[2][:-5]))
    ok, message = verify(trail)
    assert not ok
    assert message.startswith(f"{trail}:3: broken: not a JSON audit record")


def test_verify_refuses_records_without_a_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text(json.dumps(make_record(0)) + "\n")
    ok, message = verify(path)
    assert not ok
    assert "hash_chain" in message


def test_verify_accepts_a_trail_whose_start_was_rotated_away(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, [make_record(i) for i in range(40)], max_bytes=3_000, keep=2)
    ok, report = verify(path)
    assert ok, report
    assert "rotated away" in report


def test_verify_mentions_records_the_writer_lost(trail: Path) -> None:
    write_trail(trail, [make_record(10, dropped=5)])  # "dropped" supplied is replaced: 0 lost
    assert "lost" not in verify(trail)[1]
    path = trail.with_name("lossy.jsonl")

    async def lossy() -> None:
        log = AuditLog(FileSink(path), queue_size=1)
        log.emit(make_record(0))
        log.emit(make_record(1))  # overflow
        await log.flush()
        log.emit(make_record(2))
        await log.close()

    asyncio.run(lossy())
    ok, report = verify(path)
    assert ok
    assert "1 record(s) reported lost" in report


class LegacyLog(AuditLog):
    """A writer from before records named their writer: no "writer", no "seq"."""

    def _encode(self, record: Mapping[str, Any], seq: int, dropped: int, prev: str) -> str:
        out = json.loads(super()._encode(record, seq, dropped, prev))
        del out["writer"], out["seq"]
        return encode(out)


def write_interleaved(path: Path, kind: type[AuditLog] = LegacyLog) -> None:
    """Two processes' logs on one file: each chains from its own last line."""

    async def run() -> None:
        a, b = kind(FileSink(path)), kind(FileSink(path))
        await a.start()
        await b.start()
        for i in range(3):
            a.emit(make_record(i, request_id=f"A{i}"))
            await a.flush()
            b.emit(make_record(i, request_id=f"B{i}"))
            await b.flush()
        await a.close()
        await b.close()

    asyncio.run(run())


def test_verify_says_when_two_writers_started_one_fresh_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_interleaved(path)
    ok, message = verify(path)
    assert not ok
    assert message.startswith(f"{path}:2: broken link")
    assert f"starts a new chain, and the chain it interrupts goes on at {path}:3" in message
    assert "several writers appended to this one file" in message
    assert "{pid}" in message and "Redis stream" in message


def test_verify_says_when_two_writers_continued_one_trail(trail: Path) -> None:
    write_interleaved(trail)  # both read the same last line, then both chain from it
    ok, message = verify(trail)
    assert not ok
    assert message.startswith(f"{trail}:12: broken link")
    assert (
        f"but an earlier one ({trail}:10), and the chain it interrupts goes on at {trail}:13"
        in message
    )
    assert "several writers appended to this one file" in message
    assert "file://guardrail-audit-{pid}.jsonl" in message


def test_two_named_writers_on_one_trail_verify_writer_by_writer(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_interleaved(path, AuditLog)
    ok, report = verify(path)
    assert ok, report
    head, *rows = report.splitlines()
    assert head == "OK: 6 records in 1 file(s) by 2 writers, each writer's hash chain intact"
    assert len(rows) == 2 and all("3 record(s) (seq 1-3)" in row for row in rows)
    assert "starts at genesis" in rows[0] and "starts at genesis" in rows[1]


def test_a_named_writer_continues_an_unnamed_trail(trail: Path) -> None:
    write_interleaved(trail, AuditLog)  # both read the legacy trail's last line
    ok, report = verify(trail)
    assert ok, report
    assert f"continues the trail after {trail}:10" in report


def test_a_line_removed_from_one_writer_of_several_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_interleaved(path, AuditLog)
    edit_lines(path, lambda lines: lines.pop(2))  # A's second record
    ok, message = verify(path)
    assert not ok
    writer = json.loads(path.read_text().splitlines()[0])["writer"]
    assert message.startswith(f"{path}:4: broken link in the chain of writer {writer}")
    assert f"line before ({path}:1)" in message and "removed or inserted" in message


def test_a_writer_whose_first_record_links_to_nothing_is_broken(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_interleaved(path, AuditLog)
    write_trail(path, [make_record(9)])  # a third writer, continuing line 6

    def unanchor(lines: list[str]) -> None:
        lines.pop(5)  # the line the third writer continues: gone

    edit_lines(path, unanchor)
    ok, message = verify(path)
    assert not ok
    assert message.startswith(f"{path}:6: broken: the first record of writer w links to no")


def test_verify_still_tells_an_inserted_line_from_two_writers(trail: Path) -> None:
    def insert(lines: list[str]) -> None:
        forged = json.loads(lines[5])
        forged["request_id"] = "forged"
        forged["prev"] = link(lines[4])
        lines.insert(5, json.dumps(forged, separators=(",", ":")))

    edit_lines(trail, insert)  # the forged line 6 continues line 5; the real line 6 does too
    ok, message = verify(trail)
    assert not ok
    assert message.startswith(f"{trail}:7: broken link")
    assert "several writers" not in message
    assert "removed or inserted" in message


def test_a_surrogate_escaped_in_the_trail_verifies_and_tails(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, [make_record(0), make_record(1, path="/v1/\udce9"), make_record(2)])
    assert verify(path)[0]
    out = io.StringIO()
    tail(path, out=out)
    shown = out.getvalue().splitlines()[1]
    assert "/v1/\\udce9" in shown
    shown.encode("utf-8")  # printable on a UTF-8 terminal


def test_verify_of_an_empty_trail(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("")
    assert verify(path) == (True, "OK: trail is empty (1 file(s))")


# --- summary -----------------------------------------------------------------------------------


def mixed_records() -> list[dict[str, object]]:
    a = {"api_key": "k:" + "a" * 32, "ip": "203.0.113.7", "subnet": "203.0.113.0/24"}
    b = {"account": "acct-42", "ip": "198.51.100.9", "subnet": "198.51.100.0/24"}
    return [
        make_record(0, at=T0, action="allow", status=200, subject=a, signals={}, score=0.0),
        make_record(1, at=T0 + 60, action="limit", subject=a, signals={"timing_regularity": 31.0}),
        make_record(
            2,
            at=T0 + 3_000,
            action="challenge",
            status=403,
            subject=b,
            route="default",
            signals={"timing_regularity": 4.0, "prompt_templating": 22.5},
        ),
        make_record(
            3,
            at=T0 + 3_500,
            action="block",
            status=403,
            subject=b,
            signals={"prompt_templating": 40.0},
        ),
        make_record(4, at=T0 + 3_550, action="limit", subject=a, signals={}),
    ]


def test_summary_counts_the_whole_trail(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, mixed_records())
    data = summary(path, None, T0 + 3_600)
    assert data["records"] == 5
    assert data["first"] == format_ts(T0) and data["last"] == format_ts(T0 + 3_550)
    assert data["by_action"] == {"limit": 2, "allow": 1, "challenge": 1, "block": 1}
    assert data["by_route"] == {
        "inference": {"total": 4, "limit": 2, "allow": 1, "block": 1},
        "default": {"total": 1, "challenge": 1},
    }
    assert data["top_subjects"]["api_key"] == [{"value": "k:" + "a" * 32, "count": 2}]
    assert data["top_subjects"]["account"] == [{"value": "acct-42", "count": 2}]
    assert data["top_subjects"]["ip"] == [
        {"value": "203.0.113.7", "count": 2},
        {"value": "198.51.100.9", "count": 2},
    ]
    assert data["top_signals"] == [
        {"name": "prompt_templating", "sum": 62.5, "count": 2},
        {"name": "timing_regularity", "sum": 35.0, "count": 2},
    ]
    assert data["malformed"] == [] and data["dropped"] == 0
    json.dumps(data)  # --json prints it as is


def test_summary_counts_decisions_not_the_trail_s_own_events(tmp_path: Path) -> None:
    """Policy reloads are records of the trail, not decisions about requests: they are counted
    apart, not as decisions, actions or routes (a writer's seal is not read as a record)."""
    path = tmp_path / "audit.jsonl"
    events = [
        make_record(5, at=T0 + 3_560, action="policy_reload", route=None),
        make_record(6, at=T0 + 3_570, action="policy_reload_refused", route=None),
        make_record(7, at=T0 + 3_580, action="sealed", route=None),
    ]
    write_trail(path, [*mixed_records(), *events])
    data = summary(path, None, T0 + 3_600)
    assert data["records"] == 7
    assert data["decisions"] == 5
    assert data["events"] == {"policy_reload": 1, "policy_reload_refused": 1}
    assert data["by_action"] == {"limit": 2, "allow": 1, "challenge": 1, "block": 1}
    assert "-" not in data["by_route"]
    assert "records: 7 (5 decisions; 2 events: policy_reload 1" in render_summary(data)


def test_summary_since_keeps_only_the_window(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, mixed_records())
    data = summary(path, since_seconds=3_600 - 2_900, now=T0 + 3_600)
    assert data["since"] == format_ts(T0 + 2_900)
    assert data["records"] == 3
    assert data["by_action"] == {"challenge": 1, "block": 1, "limit": 1}
    assert summary(path, since_seconds=10, now=T0 + 3_600)["records"] == 0


def test_summary_counts_malformed_lines_without_failing(trail: Path) -> None:
    edit_lines(trail, lambda lines: lines.insert(0, "garbage"))
    data = summary(trail, now=T0 + 100)
    assert data["records"] == 10
    assert data["malformed"] == [f"{trail}:1"]
    assert f"first at {trail}:1" in render_summary(data)


def test_render_summary_is_a_readable_table(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, mixed_records())
    text = render_summary(summary(path, None, T0 + 3_600))
    assert "records: 5" in text
    assert "  limit                      2" in text
    assert "  inference                  4   limit=2, allow=1, block=1" in text
    assert "acct-42" in text
    assert "prompt_templating" in text and "62.5" in text
    empty = path.with_name("empty.jsonl")
    empty.write_text("")
    assert "(none)" in render_summary(summary(empty, None, T0))


# --- tail --------------------------------------------------------------------------------------


def test_format_record_has_fixed_columns() -> None:
    record = make_record(
        1,
        at=T0 + 0.123,
        score=78.4,
        subject={"api_key": "k:" + "ab" * 16, "ip": "203.0.113.7", "subnet": "203.0.113.0/24"},
        signals={"prompt_templating": 22.5, "timing_regularity": 31.0},
    )
    assert format_record(record) == (
        "2026-11-28T14:00:00.123Z  limit            429  score=78.4   inference    "
        "POST /v1/chat/completions           api_key=k:abababababababababababababababab "
        "ip=203.0.113.7  limit=api_key:60/minute retry=4s  "
        "top: timing_regularity=31.0 prompt_templating=22.5"
    )
    throttled = format_record(
        make_record(
            2,
            action="throttle",
            tier="slow",
            status=200,
            limit=None,
            signals={},
            mode="observe",
            dropped=3,
        )
    )
    notice, line = throttled.split("\n")
    assert notice.strip() == "!! 3 record(s) lost before this one"
    assert "throttle         200  score=12.5   inference" in line
    assert line.endswith("tier=slow  (observe: not enforced)")
    challenge_failed = format_record(make_record(3, action="challenge_failed", status=None))
    plain = format_record(make_record(4))
    assert challenge_failed.index("  -  score=") == plain.index("429  score=")  # aligned
    assert challenge_failed.index("score=") == plain.index("score=")
    assert challenge_failed.index("inference") == plain.index("inference")


def test_tail_prints_rotated_files_first(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, [make_record(i) for i in range(30)], max_bytes=3_000, keep=100)
    out = io.StringIO()
    assert tail(path, out=out) == 0
    lines = out.getvalue().splitlines()
    assert [line[:24] for line in lines] == [format_ts(T0 + i) for i in range(30)]
    last = io.StringIO()
    tail(path, out=last, lines=3)
    assert last.getvalue().splitlines() == lines[-3:]


def test_tail_mentions_malformed_lines(trail: Path) -> None:
    edit_lines(trail, lambda lines: lines.insert(1, "{oops"))
    out = io.StringIO()
    assert tail(trail, out=out) == 0
    text = out.getvalue().splitlines()
    assert text[1] == f"!! {trail}:2: not an audit record: b'{{oops'"
    assert text[-1] == "-- 1 line(s) were not audit records"
    assert len(text) == 12


def test_tail_follow_survives_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    records = [make_record(i) for i in range(40)]
    write_trail(path, records[:3], max_bytes=3_000, keep=100)
    steps: list[Callable[[], None]] = [
        lambda: write_trail(path, records[3:5], max_bytes=3_000, keep=100),
        lambda: None,  # nothing new
        lambda: write_trail(path, records[5:9], max_bytes=3_000, keep=100),  # rotates
        lambda: write_trail(path, records[9:30], max_bytes=3_000, keep=100),  # rotates often
        lambda: append_raw(path, json.dumps(records[30])[:40]),  # half a line: held back
        lambda: append_raw(path, json.dumps(records[30])[40:] + "\n"),
        lambda: write_trail(path, records[31:40], max_bytes=3_000, keep=2),  # old files deleted
    ]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        steps[len(sleeps) - 1]()

    out = io.StringIO()
    assert (
        tail(
            path,
            follow=True,
            out=out,
            sleep=sleep,
            interval=0.5,
            stop=lambda: len(sleeps) == len(steps),
        )
        == 0
    )
    assert sleeps == [0.5] * len(steps)
    stamps = [line[:24] for line in out.getvalue().splitlines()]
    assert stamps == [format_ts(T0 + i) for i in range(40)]


def append_raw(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as file:
        file.write(text)


def test_tail_follow_starts_over_after_truncation(trail: Path) -> None:
    out = io.StringIO()
    polls = [0]

    def sleep(_: float) -> None:
        polls[0] += 1
        trail.write_text(json.dumps(make_record(99)) + "\n")  # copytruncate-style rotation

    tail(trail, follow=True, out=out, sleep=sleep, stop=lambda: polls[0] == 1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 11
    assert "req" not in lines[-1] and lines[-1].startswith(format_ts(T0 + 99))


def test_tail_follow_stops_on_ctrl_c(trail: Path) -> None:
    def sleep(_: float) -> None:
        raise KeyboardInterrupt

    out = io.StringIO()
    assert tail(trail, follow=True, out=out, sleep=sleep) == 0
    assert len(out.getvalue().splitlines()) == 10


def test_tail_follow_when_its_file_was_rotated_away_entirely(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    records = [make_record(i) for i in range(8)]  # 602 bytes a line: two fit in 1300
    write_trail(path, records[:2], max_bytes=1_300, keep=1)
    polls = [0]

    def sleep(_: float) -> None:
        polls[0] += 1
        write_trail(path, records[2:8], max_bytes=1_300, keep=1)  # 3 rotations, keep 1

    out = io.StringIO()
    tail(path, follow=True, out=out, sleep=sleep, stop=lambda: polls[0] == 1)
    stamps = [line[:24] for line in out.getvalue().splitlines()]
    # 2 and 3 were rotated out and deleted before the poll could see them
    assert stamps == [format_ts(T0 + i) for i in (0, 1, 4, 5, 6, 7)]


# --- aggregated refusals and what a terminal is shown ------------------------------------------


def aggregated_records() -> list[dict[str, object]]:
    return [
        make_record(0, at=T0),
        make_record(
            1,
            at=T0 + 9,
            repeated=41,
            first=format_ts(T0 + 0.5),
            last=format_ts(T0 + 9),
        ),
        make_record(2, at=T0 + 20, action="block", status=403),
    ]


def test_summary_counts_what_aggregated_records_stand_for(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, aggregated_records())
    data = summary(path, None, T0 + 60)
    assert data["records"] == 3 and data["decisions"] == 43
    assert data["by_action"] == {"limit": 42, "block": 1}
    assert data["by_route"]["inference"]["total"] == 43
    assert data["top_subjects"]["ip"] == [{"value": "203.0.113.7", "count": 43}]
    assert "records: 3 (43 decisions)" in render_summary(data)
    ok, report = verify(path)
    assert ok and "3 records (standing for 43 decisions)" in report


def test_tail_shows_the_count_of_an_aggregated_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, aggregated_records())
    out = io.StringIO()
    tail(path, out=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    single, counted = format_record(aggregated_records()[0]), lines[1]
    assert counted.index("POST /v1/") == single.index("POST /v1/")  # the columns stay aligned
    assert f"  x41 from {format_ts(T0 + 0.5)} to {format_ts(T0 + 9)}  api_key=" in counted
    assert " x4" not in lines[0] and " x4" not in lines[2]


TERMINAL_CONTROLS = "\r\n\x1b[2J\x1b]0;owned\x07\x9b31m\u202e\u2066\u2028\u2029\x00\x7f\ufeff"


def test_tail_escapes_every_character_that_could_drive_a_terminal(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    evil = {
        "api_key": "k:" + "a" * 32,
        "account": "acct" + TERMINAL_CONTROLS,
        "ip": "203.0.113.7",
        "subnet": "203.0.113.0/24",
    }
    record = make_record(
        0,
        method="GET\r\n",
        path="/v1/" + TERMINAL_CONTROLS + "ok",
        subject=evil,
        route="r\x1b",
        tier="t\x9b",
        limit={"per": "ip\x1b", "rate": "1/s\n", "retry_after": 1},
        signals={"sig\x1b[31m": 1.0},
        repeated=2,
        first="\x1b",
        last="\r",
    )
    write_trail(path, [record])
    out = io.StringIO()
    tail(path, out=out)
    shown = out.getvalue()
    assert shown.count("\n") == 1  # one record, one line
    for line in shown.splitlines():
        assert line.isprintable(), repr(line)
    assert "/v1/\\r\\n\\x1b[2J\\x1b]0;owned\\x07\\x9b31m\\u202e\\u2066\\u2028\\u2029" in shown
    assert "\\x00\\x7f\\ufeffok" in shown
    assert "account=acct\\r\\n\\x1b[2J" in shown


def test_render_summary_escapes_subject_values(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    subject = {"account": "acct\x1b[2J\u202e", "ip": "203.0.113.7", "subnet": "203.0.113.0/24"}
    write_trail(path, [make_record(0, subject=subject, route="r\n")])
    text = render_summary(summary(path, None, T0 + 60))
    assert all(line.isprintable() for line in text.splitlines())
    assert "acct\\x1b[2J\\u202e" in text
