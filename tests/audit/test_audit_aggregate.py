from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from guardrail.audit.aggregate import Key, Refusals, refusal_key
from guardrail.audit.record import format_ts
from guardrail.backends.base import BucketState, Outcome
from guardrail.cautions import cautions
from guardrail.decision import Decision
from guardrail.identity import Subject, hash_key
from guardrail.policy import Policy

from audit_helpers import T0, make_record
from conftest import FakeClock
from helpers import CHAT, POLICY, SECRET, audit_records, bearer, build, client

KEY: Key = ("inference", "limit", 429, "ip:203.0.113.7", "inference:0")
OTHER: Key = ("inference", "limit", 429, "ip:198.51.100.9", "inference:0")


def refusals(
    clock: FakeClock, interval: float = 10.0, **options: Any
) -> tuple[Refusals, list[Mapping[str, Any]]]:
    written: list[Mapping[str, Any]] = []
    return Refusals(written.append, interval, clock, **options), written


def test_first_refusal_in_full_the_rest_of_the_interval_as_one_counted_record() -> None:
    clock = FakeClock(T0)
    log, written = refusals(clock)
    for i in range(50):
        log.emit(make_record(i, at=clock()), KEY, clock())
        clock.advance(0.1)
    assert [r["request_id"] for r in written] == ["req-000000"]  # the first, whole
    assert log.pending == 49
    clock.now = T0 + 10.0  # the interval is over: the next refusal closes it, then opens one
    log.emit(make_record(50, at=clock()), KEY, clock())
    counted, fresh = written[1:]
    assert counted["repeated"] == 49
    assert counted["first"] == format_ts(T0 + 0.1) and counted["last"] == format_ts(T0 + 4.9)
    assert counted["request_id"] == "req-000049"  # the last of them stands for all
    assert fresh["request_id"] == "req-000050" and "repeated" not in fresh
    assert log.pending == 0


def test_close_writes_every_open_count_and_then_passes_refusals_through() -> None:
    clock = FakeClock(T0)
    log, written = refusals(clock)
    for i in range(3):
        log.emit(make_record(i), KEY, clock())
        log.emit(make_record(10 + i), OTHER, clock())
    log.close()
    assert sorted(r.get("repeated", 1) for r in written) == [1, 1, 2, 2]
    assert sum(r.get("repeated", 1) for r in written) == 6
    log.emit(make_record(99), KEY, clock())
    assert written[-1]["request_id"] == "req-000099"  # after shutdown: nothing held


def test_a_single_counted_refusal_is_written_as_it_was() -> None:
    clock = FakeClock(T0)
    log, written = refusals(clock)
    log.emit(make_record(0), KEY, clock())
    log.emit(make_record(1), KEY, clock())
    log.close()
    assert [r["request_id"] for r in written] == ["req-000000", "req-000001"]
    assert all("repeated" not in r for r in written)


def test_records_without_a_key_and_interval_zero_are_written_at_once() -> None:
    clock = FakeClock(T0)
    log, written = refusals(clock)
    for i in range(3):
        log.emit(make_record(i), None, clock())
    off, written_off = refusals(clock, interval=0)
    for i in range(3):
        off.emit(make_record(i), KEY, clock())
    assert len(written) == len(written_off) == 3


def test_full_table_closes_its_oldest_interval_early_and_loses_nothing() -> None:
    clock = FakeClock(T0)
    log, written = refusals(clock, max_keys=2)
    keys: list[Key] = [("r", "limit", 429, f"ip:10.0.0.{i}", "r:0") for i in range(5)]
    for key in keys:  # two refusals of each: a full record, and one counted
        log.emit(make_record(0), key, clock())
        log.emit(make_record(1), key, clock())
        clock.advance(0.001)
    assert log.pending <= 2  # at most max_keys intervals hold records
    log.close()
    assert sum(r.get("repeated", 1) for r in written) == 10


def test_intervals_close_in_the_order_they_opened_whoever_refuses_next() -> None:
    clock = FakeClock(T0)
    log, written = refusals(clock)
    log.emit(make_record(0), KEY, clock())
    log.emit(make_record(1), KEY, clock())
    clock.advance(11)
    log.emit(make_record(2), OTHER, clock())  # another subject's refusal closes KEY's interval
    assert [r["request_id"] for r in written] == ["req-000000", "req-000001", "req-000002"]


async def test_a_timer_writes_the_count_when_refusals_stop() -> None:
    clock = FakeClock(T0)
    written: list[Mapping[str, Any]] = []
    counted = asyncio.Event()

    def write(record: Mapping[str, Any]) -> None:
        written.append(record)
        if "repeated" in record:
            counted.set()

    log = Refusals(write, 0.01, clock)
    for i in range(4):
        log.emit(make_record(i), KEY, clock())
    clock.advance(1)  # the injected clock says the interval is over; no refusal follows
    async with asyncio.timeout(5):
        await counted.wait()  # the timer's wake-up, on the loop
    assert [r.get("repeated", 1) for r in written] == [1, 3]
    log.close()


def test_aggregate_zero_is_a_caution() -> None:
    policy = Policy.from_string("version: 1\naudit:\n  aggregate: 0\n")
    [caution] = cautions(policy)
    assert caution.path == "audit.aggregate" and caution.line == 3
    assert "retention" in caution.expected
    assert not cautions(Policy.from_string("version: 1\n"))


# --- what a refusal is counted under, through the middleware -----------------------------------


def _decision(action: str, **fields: Any) -> Decision:
    subject = Subject("k:" + "a" * 32, None, "203.0.113.7", "203.0.113.0/24")
    return Decision("req", "inference", subject, action=action, **fields)


def test_refusals_without_a_refusing_bucket_are_keyed_on_the_network() -> None:
    for action in ("block", "challenge", "challenge_failed"):
        key = refusal_key(_decision(action), 403)
        assert key == ("inference", action, 403, "subnet:203.0.113.0/24", "")
    assert refusal_key(_decision("limit", storage_error=True), 503) == (
        "inference",
        "limit",
        503,
        "subnet:203.0.113.0/24",
        "",
    )
    assert refusal_key(_decision("throttle"), 413) is not None  # a tier that cannot rewrite
    # Served, passed, or a stream its budget cut after admission: always a record of its own.
    for action, status in (("allow", 200), ("throttle", 200), ("challenge_passed", 303)):
        assert refusal_key(_decision(action), status) is None
    admitted = Outcome(True, (BucketState(0, 1.0, 0.0),))
    assert refusal_key(_decision("limit", outcome=admitted), 200) is None


async def test_random_api_keys_from_one_ip_make_two_records_whatever_their_number(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = build(tmp_path, clock)  # the default route: per ip, burst 2
    async with client(app) as http:
        statuses = [
            (await http.get("/page", headers=bearer(secrets.token_hex(8)))).status_code
            for _ in range(40)
        ]
    await app.shutdown()
    assert statuses.count(429) == 38
    limited = [r for r in audit_records(tmp_path) if r["action"] == "limit"]
    assert [r.get("repeated", 1) for r in limited] == [1, 37]
    assert limited[1]["first"] <= limited[1]["last"] == limited[1]["ts"]


async def test_each_refusing_bucket_has_its_own_count(tmp_path: Path, clock: FakeClock) -> None:
    app = build(tmp_path, clock)  # inference: per api_key, burst 3 (per subnet, burst 5)
    for key, peer in (("sk-one", "203.0.113.7"), ("sk-two", "198.51.100.9")):
        async with client(app, peer) as http:
            for _ in range(6):
                await http.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
    await app.shutdown()
    limited = [r for r in audit_records(tmp_path) if r["action"] == "limit"]
    counts = {(r["subject"]["api_key"], r.get("repeated", 1)) for r in limited}
    one, two = hash_key(SECRET.encode(), "sk-one"), hash_key(SECRET.encode(), "sk-two")
    assert counts == {(one, 1), (one, 2), (two, 1), (two, 2)}


async def test_aggregate_zero_records_every_refusal(tmp_path: Path, clock: FakeClock) -> None:
    app = build(tmp_path, clock, POLICY + "audit: {aggregate: 0}\n")
    async with client(app) as http:
        for _ in range(10):
            await http.get("/page")
    await app.shutdown()
    limited = [r for r in audit_records(tmp_path) if r["action"] == "limit"]
    assert len(limited) == 8 and all("repeated" not in r for r in limited)


def test_timeouts_are_keyed_on_the_bucket_that_refused_them_or_the_network() -> None:
    from guardrail.limits import RouteTable

    route = RouteTable(Policy.from_string(POLICY).routes).routes[1]
    assert route.name == "inference"
    limits = route.charged
    admitted = Outcome(True, tuple(BucketState(1, 1.0, 0.0) for _ in limits))
    key = refusal_key(_decision("timeout", outcome=admitted, limits=limits), 408)
    assert key == ("inference", "timeout", 408, "subnet:203.0.113.0/24", "")
    assert refusal_key(_decision("timeout"), 408) == key  # not charged (fail_closed)
    refused = Outcome(False, (BucketState(0, 5.0, 5.0), *admitted.states[1:]))
    key = refusal_key(_decision("timeout", outcome=refused, limits=limits), 408)
    assert key is not None and key[:3] == ("inference", "timeout", 408)
    assert key[3] == limits[0].subject_key(_decision("timeout").subject)
