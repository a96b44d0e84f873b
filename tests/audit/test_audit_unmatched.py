"""audit.unmatched: requests no route matched, one record an interval, paths bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from guardrail.audit.unmatched import OTHER, Unmatched

from conftest import FakeClock

HEAD = {"policy": "sha256:x", "mode": "enforce"}


def counter(clock: FakeClock, **options: Any) -> tuple[Unmatched, list[Mapping[str, Any]]]:
    written: list[Mapping[str, Any]] = []
    return Unmatched(written.append, HEAD, "pass", 10.0, clock, **options), written


def test_one_record_an_interval(clock: FakeClock) -> None:
    unmatched, written = counter(clock)
    for path in ("/chat/completions", "/chat/completions", "/engines/m/chat/completions"):
        unmatched.count("POST", path, clock())
        clock.advance(1)
    assert written == [] and unmatched.pending == 3
    clock.advance(10)
    unmatched.count("GET", "/v1/models", clock())  # the next interval's first closes the last
    [record] = written
    assert record["action"] == "unmatched" and record["unmatched"] == "pass"
    assert record["route"] is None and record["repeated"] == 3
    assert record["policy"] == "sha256:x" and record["mode"] == "enforce"
    assert record["paths"] == {"POST /chat/completions": 2, "POST /engines/m/chat/completions": 1}
    assert record["first"] < record["last"] == record["ts"]
    unmatched.close()
    assert written[1]["paths"] == {"GET /v1/models": 1} and written[1]["repeated"] == 1
    unmatched.close()  # nothing more to write
    assert len(written) == 2


def test_paths_are_bounded(clock: FakeClock) -> None:
    unmatched, written = counter(clock, max_paths=2)
    for n in range(5):
        unmatched.count("POST", f"/scan/{n}", clock())
    unmatched.count("POST", "/scan/0", clock())
    unmatched.close()
    [record] = written
    assert record["paths"] == {"POST /scan/0": 2, OTHER: 3, "POST /scan/1": 1}
    assert record["repeated"] == 6


def test_a_long_path_is_cut(clock: FakeClock) -> None:
    unmatched, written = counter(clock)
    unmatched.count("POST", "/" + "a" * 5000, clock())
    unmatched.close()
    [key] = written[0]["paths"]
    assert len(key) < 300 and "5001 chars" in key


async def test_the_timer_writes_when_traffic_stops(clock: FakeClock) -> None:
    written: list[Mapping[str, Any]] = []
    counted = asyncio.Event()

    def write(record: Mapping[str, Any]) -> None:
        written.append(record)
        counted.set()

    unmatched = Unmatched(write, HEAD, "refuse", 0.01, clock)
    unmatched.count("POST", "/chat/completions", clock())
    clock.advance(1)  # the injected clock says the interval is over; no request follows
    async with asyncio.timeout(5):
        await counted.wait()  # the timer's wake-up, on the loop
    assert [(r["repeated"], r["unmatched"]) for r in written] == [(1, "refuse")]
    unmatched.close()
