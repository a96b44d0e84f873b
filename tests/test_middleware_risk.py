"""The risk engine's actions through the middleware: throttle (tier limits, delay, header),
challenge (403 with the challenge; an HTML page for browsers), block, observe, allow-list."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from guardrail.backends.risk_memory import MemoryRiskStore
from guardrail.backends.risk_shared import SharedRiskStore
from guardrail.cli import main
from guardrail.signals.catalog import SIGNALS

from conftest import FakeClock
from helpers import audit_records, bearer, build, client
from redis_servers import free_port

ASK = "Please answer this question and show your full reasoning, number {}"


def policy(
    weight: float,
    *,
    mode: str = "enforce",
    extra: str = "",
    header: bool = True,
    share: str | None = None,
) -> str:
    # Only reasoning_extraction counts, so the score is exactly 20 x weight once four prompts
    # have asked for reasoning.
    weights = "".join(
        f"    {s.name}: {{weight: {weight if s.name == 'reasoning_extraction' else 0}}}\n"
        for s in SIGNALS
    )
    return f"""
version: 1
mode: {mode}
secret: env:GUARDRAIL_TEST_SECRET
identity:
  api_key: {{header: authorization}}
  account: {{header: x-account-id}}
  client_ip: {{trusted_proxies: [10.0.0.1]}}
routes:
  - name: inference
    match: {{path: "/v1/chat/completions$", methods: [POST]}}
    inspect: openai
    limits:
      - {{per: api_key, rate: 600/minute, burst: 100}}
  - name: default
    match: {{path: /}}
    limits:
      - {{per: ip, rate: 600/minute, burst: 100}}
risk:
{f"  share_every: {share}{chr(10)}" if share else ""}  signals:
{weights}thresholds:
  - {{score: 50, action: throttle, tier: slow}}
  - {{score: 75, action: challenge}}
  - {{score: 95, action: block}}
tiers:
  slow:
    limits: [{{per: account, rate: 6/minute, burst: 2}}]
    delay: 2s
    header: {str(header).lower()}
{extra}"""


def chat(n: int) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": ASK.format(n)}]}


HEADERS = {"authorization": "Bearer sk-test-1", "x-account-id": "acct-1"}


async def warm_up(http: Any, clock: FakeClock, n: int = 3) -> None:
    for i in range(n):
        response = await http.post("/v1/chat/completions", json=chat(i), headers=HEADERS)
        assert response.status_code == 200
        clock.advance(30)


async def test_throttle_delays_adds_the_tier_header_and_charges_the_tier_limits(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = build(tmp_path, clock, policy(3.0))
    async with client(app) as http:
        await warm_up(http, clock)
        before = clock.now
        response = await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
        assert response.status_code == 200
        assert clock.now - before == pytest.approx(2.0)  # the tier's delay, on the injected clock
        assert response.headers["guardrail-tier"] == "slow"
        assert response.headers["x-seen-action"] == "throttle"
        second = await http.post("/v1/chat/completions", json=chat(10), headers=HEADERS)
        assert second.status_code == 200
        third = await http.post("/v1/chat/completions", json=chat(11), headers=HEADERS)
        assert third.status_code == 429  # the tier's 6/minute, burst 2
        assert "tier-slow-account" in third.headers["ratelimit-policy"]
    await app.shutdown()
    records = audit_records(tmp_path)
    throttled = [r for r in records if r["action"] == "throttle"]
    assert throttled and throttled[0]["tier"] == "slow"
    # decayed evidence: a hair under 3 x 20 after the warm-up's two minutes
    assert throttled[0]["signals"] == {"reasoning_extraction": pytest.approx(60.0, abs=0.5)}
    assert throttled[0]["score"] == pytest.approx(60.0, abs=0.5)
    limited = [r for r in records if r["action"] == "limit"]
    assert limited and limited[0]["tier"] == "slow"


async def test_audit_summary_names_the_top_signals_of_mitigations(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    app = build(tmp_path, clock, policy(4.0))
    async with client(app) as http:
        await warm_up(http, clock)
        for i in range(3):
            await http.post("/v1/chat/completions", json=chat(10 + i), headers=HEADERS)
    await app.shutdown()
    assert all(r["signals"] for r in audit_records(tmp_path) if r["action"] != "allow")
    capsys.readouterr()
    assert main(["audit", "summary", str(tmp_path / "audit.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "challenge" in out and "reasoning_extraction" in out


async def test_a_tier_without_header_says_nothing(tmp_path: Path, clock: FakeClock) -> None:
    app = build(tmp_path, clock, policy(3.0, header=False))
    async with client(app) as http:
        await warm_up(http, clock)
        response = await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
    assert response.status_code == 200 and "guardrail-tier" not in response.headers
    await app.shutdown()


async def test_challenge_is_a_403_with_the_challenge_never_a_429(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = build(tmp_path, clock, policy(4.0))
    async with client(app) as http:
        await warm_up(http, clock)
        response = await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
        page = await http.get("/account", headers={**HEADERS, "accept": "text/html,*/*"})
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["guardrail-action"] == "challenge"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["type"] == "abnormal-usage-detected"
    assert body["error"]["code"] == "challenge_required"
    assert "browser" in body["error"]["message"]
    challenge = body["challenge"]
    assert challenge["url"] == f"/.guardrail/challenge/{challenge['id']}"
    assert challenge["kinds"] == ["pow"]
    assert challenge["pow"]["algorithm"] == "sha256" and challenge["pow"]["difficulty"] == 18
    assert len(challenge["pow"]["seed"]) == 32
    assert challenge["expires_at"].endswith("Z")
    # A browser of the same account gets a page, with a strict CSP
    assert page.status_code == 403
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert 'action="/.guardrail/verify"' in page.text  # the page is the challenge itself
    assert '<script src="/.guardrail/pow.js">' in page.text
    await app.shutdown()
    records = [r for r in audit_records(tmp_path) if r["action"] == "challenge"]
    assert [r["status"] for r in records] == [403, 403]
    assert records[0]["signals"] == {"reasoning_extraction": pytest.approx(80.0, abs=0.5)}


async def test_block(tmp_path: Path, clock: FakeClock) -> None:
    app = build(tmp_path, clock, policy(5.0))
    async with client(app) as http:
        await warm_up(http, clock)
        response = await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
    assert response.status_code == 403
    assert response.headers["guardrail-action"] == "block"
    assert response.json()["error"]["code"] == "blocked"
    await app.shutdown()
    assert audit_records(tmp_path)[-1]["action"] == "block"


async def test_observe_mode_scores_and_records_but_never_interferes(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = build(
        tmp_path,
        clock,
        policy(5.0, mode="observe").replace("env:GUARDRAIL_TEST_SECRET", "observe-literal"),
    )
    async with client(app) as http:
        await warm_up(http, clock)
        before = clock.now
        response = await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
    assert response.status_code == 200 and clock.now == before
    assert {k for k in response.headers if k.startswith("guardrail")} == {"guardrail-request-id"}
    await app.shutdown()
    record = audit_records(tmp_path)[-1]
    assert record["action"] == "block" and record["mode"] == "observe"
    assert record["status"] == 200


async def test_allow_listed_accounts_are_never_escalated_but_still_limited(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = build(tmp_path, clock, policy(5.0, extra="allow: {accounts: [acct-1]}\n"))
    # through the trusted proxy: an account header from anyone else is not read
    async with client(app, peer="10.0.0.1") as http:
        await warm_up(http, clock, n=8)
        response = await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
        assert response.status_code == 200 and response.headers["x-seen-action"] == "allow"
        statuses = {
            (await http.post("/v1/chat/completions", json=chat(i), headers=HEADERS)).status_code
            for i in range(120)
        }
    assert statuses == {200, 429}
    await app.shutdown()


async def test_a_failing_redis_fails_open_to_a_local_risk_engine(
    tmp_path: Path, clock: FakeClock
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0?timeout=0.2"
    app = build(tmp_path, clock, policy(3.0), storage=dead)
    async with client(app) as http:
        await warm_up(http, clock)
        response = await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
    assert response.status_code == 200 and response.headers["guardrail-tier"] == "slow"
    await app.shutdown()
    record = audit_records(tmp_path)[-1]
    assert record["action"] == "throttle" and record["degraded"] is True


async def test_a_failing_redis_fails_closed_with_a_503(tmp_path: Path, clock: FakeClock) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0?timeout=0.2"
    app = build(tmp_path, clock, policy(3.0, extra="on_storage_error: fail_closed\n"), storage=dead)
    async with client(app) as http:
        response = await http.post("/v1/chat/completions", json=chat(1), headers=HEADERS)
    assert response.status_code == 503
    await app.shutdown()
    assert audit_records(tmp_path)[-1]["storage_error"] is True


async def flushes_after(store: SharedRiskStore, flushes: int) -> None:
    async with asyncio.timeout(10):
        # polled: the flush loop is guardrail's own background task, with no event to wait on
        while store.flushes <= flushes:  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_two_instances_sharing_redis_share_the_evidence_at_the_next_flush(
    tmp_path: Path, clock: FakeClock, redis_url: str
) -> None:
    """Workers or hosts behind one Redis, each with the risk state in process: what one
    gathered reaches the other once both have flushed (here by hand: the interval is long)."""
    url = redis_url + "?timeout=5"
    first = build(tmp_path / "a", clock, policy(3.0, share="10s"), storage=url)
    second = build(tmp_path / "b", clock, policy(3.0, share="10s"), storage=url)
    async with client(first) as a, client(second) as b:
        await warm_up(a, clock)  # three requests for reasoning, all through the first
        await first.risk.store.flush()  # type: ignore[union-attr, attr-defined]
        # its first request here is assessed on what this worker holds: its own request
        response = await b.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
        assert response.status_code == 200 and "guardrail-tier" not in response.headers
        await second.risk.store.flush()  # type: ignore[union-attr, attr-defined]
        response = await b.post("/v1/chat/completions", json=chat(10), headers=HEADERS)
    assert response.status_code == 200 and response.headers["guardrail-tier"] == "slow"
    await first.shutdown()
    await second.shutdown()


@pytest.mark.parametrize(
    ("share", "reads"), [("50ms", 0.2), ("20ms", 0.2), ("200ms", 0.0), ("1s", 0.0)]
)
async def test_a_flush_reads_back_every_200ms_whatever_share_every(
    tmp_path: Path, clock: FakeClock, redis_url: str, share: str, reads: float
) -> None:
    """Writes leave every share_every; what the others wrote is read back every 200ms at
    most often (0: with every flush, share_every being as long)."""
    app = build(tmp_path, clock, policy(3.0, share=share), storage=redis_url)
    store = app.risk.store  # type: ignore[union-attr]
    assert isinstance(store, SharedRiskStore)
    assert store.read_every == reads
    await app.shutdown()


async def test_the_workers_flush_on_their_own(
    tmp_path: Path, clock: FakeClock, redis_url: str
) -> None:
    """share_every: 10ms, nothing flushed by hand: the evidence of three requests through one
    worker reaches the other (waiting, on the real clock, for the flush loops to run)."""
    url = redis_url + "?timeout=5"
    first = build(tmp_path / "a", clock, policy(3.0, share="10ms"), storage=url)
    second = build(tmp_path / "b", clock, policy(3.0, share="10ms"), storage=url)
    async with client(first) as a, client(second) as b:
        sent = first.risk.store  # type: ignore[union-attr]
        taken = second.risk.store  # type: ignore[union-attr]
        assert isinstance(sent, SharedRiskStore) and isinstance(taken, SharedRiskStore)
        flushes = sent.flushes
        await warm_up(a, clock)
        await flushes_after(sent, flushes)  # the first worker's loop sent them
        flushes = taken.flushes
        response = await b.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
        await flushes_after(taken, flushes)  # and the second's took them
        response = await b.post("/v1/chat/completions", json=chat(10), headers=HEADERS)
    assert response.status_code == 200 and response.headers["guardrail-tier"] == "slow"
    await first.shutdown()
    await second.shutdown()


async def test_two_instances_sharing_redis_request_by_request_share_the_evidence_at_once(
    tmp_path: Path, clock: FakeClock, redis_url: str
) -> None:
    """share_every: request, the risk state read and written in Redis on every request:
    evidence gathered by one worker counts at the other's next request."""
    url = redis_url + "?timeout=5"
    first = build(tmp_path / "a", clock, policy(3.0, share="request"), storage=url)
    second = build(tmp_path / "b", clock, policy(3.0, share="request"), storage=url)
    async with client(first) as a, client(second) as b:
        await warm_up(a, clock)  # three requests for reasoning, all through the first
        response = await b.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
    assert response.status_code == 200 and response.headers["guardrail-tier"] == "slow"
    await first.shutdown()
    await second.shutdown()


async def test_redis_mode_costs_two_round_trips_the_risk_write_alongside_the_charge(
    tmp_path: Path, clock: FakeClock, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One pipelined read of the risk state, then the risk write and the bucket charge
    together: two round trips in sequence, whatever the number of keys."""
    from guardrail.backends.redis import RedisStorage
    from guardrail.backends.risk_redis import RedisRiskStore

    events: list[str] = []
    execute, charge = RedisRiskStore._execute, RedisStorage.charge

    async def traced_execute(self: RedisRiskStore, commands: Any) -> Any:
        events.append("risk start")
        try:
            return await execute(self, commands)
        finally:
            events.append("risk end")

    async def traced_charge(self: RedisStorage, charges: Any, now: float) -> Any:
        events.append("charge start")
        try:
            return await charge(self, charges, now)
        finally:
            events.append("charge end")

    monkeypatch.setattr(RedisRiskStore, "_execute", traced_execute)
    monkeypatch.setattr(RedisStorage, "charge", traced_charge)
    app = build(tmp_path, clock, policy(1.0, share="request"), storage=redis_url + "?timeout=5")
    async with client(app) as http:
        await http.post("/v1/chat/completions", json=chat(0), headers=HEADERS)
        events.clear()
        response = await http.post("/v1/chat/completions", json=chat(1), headers=HEADERS)
    assert response.status_code == 200
    await app.shutdown()
    # the read, then the write and the charge both in flight before either ends
    assert events[:2] == ["risk start", "risk end"]
    assert sorted(events[2:4]) == ["charge start", "risk start"]
    assert sorted(events[4:]) == ["charge end", "risk end"]


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> str | None:
    if request.param == "memory":
        return None
    return str(request.getfixturevalue("redis_url")) + "?timeout=5"


async def test_hostile_prompts_are_scored_never_a_500(
    tmp_path: Path, clock: FakeClock, storage: str | None
) -> None:
    """A lone surrogate is valid JSON; `max_tokens: true` is a bool, not a count; both once
    crashed a request or silently dropped the engine's write."""
    app = build(tmp_path, clock, policy(3.0), storage=storage)
    bodies = [
        b'{"model":"m","messages":[{"role":"user","content":"hi \\udc80 show your full reasoning'
        b' now please"}]}',
        *(json.dumps({**chat(i), "max_tokens": True}).encode() for i in range(4)),
    ]
    async with client(app) as http:
        statuses = []
        for body in bodies:
            response = await http.post(
                "/v1/chat/completions",
                content=body,
                headers={**HEADERS, "content-type": "application/json"},
            )
            statuses.append(response.status_code)
            clock.advance(30)
    assert statuses[:4] == [200, 200, 200, 200]
    assert response.headers.get("guardrail-tier") == "slow"  # the evidence was kept
    await app.shutdown()


async def test_a_silent_tier_stays_out_of_the_ratelimit_headers(
    tmp_path: Path, clock: FakeClock
) -> None:
    text = policy(3.0, header=False).replace(
        "    inspect: openai\n", "    inspect: openai\n    headers: true\n", 1
    )
    app = build(tmp_path, clock, text)
    async with client(app) as http:
        await warm_up(http, clock)
        response = await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
    assert response.status_code == 200 and response.headers["x-seen-action"] == "throttle"
    assert "tier" not in response.headers["ratelimit-policy"]
    assert "tier" not in response.headers["ratelimit"]
    await app.shutdown()


async def test_the_tiers_own_429s_do_not_push_a_throttled_client_into_a_challenge(
    tmp_path: Path, clock: FakeClock
) -> None:
    """SDKs retry 429s by themselves: the throttle's own refusals must not feed the score."""
    app = build(tmp_path, clock, policy(3.0))
    async with client(app) as http:
        await warm_up(http, clock)
        actions = set()
        for i in range(60):
            response = await http.post("/v1/chat/completions", json=chat(i), headers=HEADERS)
            actions.add(response.headers.get("guardrail-action", "served"))
            clock.advance(1)
    assert actions == {"served", "limit"}
    await app.shutdown()


def asgi_post() -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [
            *((name.encode(), value.encode()) for name, value in HEADERS.items()),
            (b"content-type", b"application/json"),
            (b"content-length", b"100000"),
        ],
        "client": ("203.0.113.7", 1),
        "query_string": b"",
    }


async def test_a_principal_in_a_refusing_band_is_answered_before_its_body(
    tmp_path: Path, clock: FakeClock, storage: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from guardrail.backends.redis import RedisStorage
    from guardrail.backends.risk_redis import RedisRiskStore

    trips: list[str] = []
    execute, charge = RedisRiskStore._execute, RedisStorage.charge

    async def traced_execute(self: RedisRiskStore, commands: Any) -> Any:
        trips.append("risk")
        return await execute(self, commands)

    async def traced_charge(self: RedisStorage, charges: Any, now: float) -> Any:
        trips.append("charge")
        return await charge(self, charges, now)

    monkeypatch.setattr(RedisRiskStore, "_execute", traced_execute)
    monkeypatch.setattr(RedisStorage, "charge", traced_charge)
    app = build(tmp_path, clock, policy(5.0), storage=storage)
    async with client(app) as http:
        await warm_up(http, clock)
        blocked = await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
    assert blocked.status_code == 403  # assessed with its body: the block band
    reads: list[str] = []

    async def receive() -> dict[str, Any]:
        reads.append("read")
        return {"type": "http.request", "body": json.dumps(chat(10)).encode()}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    trips.clear()
    clock.advance(1.0)
    await app(asgi_post(), receive, send)
    assert sent[0]["status"] == 403 and not reads
    assert not trips  # no storage round trip either
    assert (b"guardrail-action", b"block") in sent[0]["headers"]
    clock.advance(10.0)  # RECHECK: the next request is assessed in full again, body and all
    await app(asgi_post(), receive, send)
    assert sent[2]["status"] == 403 and reads == ["read"]
    await app.shutdown()
    records = [r for r in audit_records(tmp_path) if r["action"] == "block"]
    assert len(records) == 3
    # the early answer's record names the signals of the assessment that put it there
    assert records[1]["signals"] == records[0]["signals"] != {}
    assert records[1]["score"] == records[0]["score"]


async def test_the_challenge_band_is_answered_before_the_body_unless_cleared(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = build(tmp_path, clock, policy(4.0))
    async with client(app) as http:
        await warm_up(http, clock)
        challenged = await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
    assert challenged.status_code == 403  # the challenge band

    async def unread() -> dict[str, Any]:
        raise AssertionError("the body was read")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(asgi_post(), unread, send)
    assert sent[0]["status"] == 403
    assert (b"guardrail-action", b"challenge") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"]["code"] == "challenge_required"
    await app.shutdown()


async def test_a_banded_principal_from_an_allow_listed_network_is_still_not_escalated(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = build(tmp_path, clock, policy(5.0, extra="allow: {cidrs: [198.51.100.0/24]}\n"))
    async with client(app) as http:
        await warm_up(http, clock)
        blocked = await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
    assert blocked.status_code == 403  # known to be in the block band from here on
    async with client(app, peer="198.51.100.7") as allowed:
        response = await allowed.post("/v1/chat/completions", json=chat(10), headers=HEADERS)
    assert response.status_code == 200  # as before the band was known: allow: is never escalated
    await app.shutdown()


async def test_a_stalled_body_still_tells_the_band_so_the_next_are_refused_before_theirs(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = build(tmp_path, clock, policy(5.0))
    async with client(app) as http:
        await warm_up(http, clock)
        assert (
            await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
        ).status_code == 403
    clock.advance(10.0)  # RECHECK: the band is no longer known
    release = asyncio.Event()

    async def stalled() -> dict[str, Any]:
        await release.wait()
        raise AssertionError("never released")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    request = asyncio.create_task(app(asgi_post(), stalled, send))
    for _ in range(10):
        await asyncio.sleep(0)
    app.deadlines.sweep(time.monotonic() + 10.0)
    await request
    assert sent[0]["status"] == 408

    async def unread() -> dict[str, Any]:
        raise AssertionError("the body was read")

    await app(asgi_post(), unread, send)  # known again, from the stalled request's assessment
    assert sent[2]["status"] == 403
    await app.shutdown()
    records = audit_records(tmp_path)
    assert [(r["action"], r["status"]) for r in records[-2:]] == [("timeout", 408), ("block", 403)]
    assert records[-2]["score"] == records[-1]["score"] > 95


FLOODED = policy(3.0).replace(
    "      - {per: api_key, rate: 600/minute, burst: 100}",
    "      - {per: ip, rate: 6/minute, burst: 2}",
)


async def flood_of_new_keys(app: Any) -> tuple[int, int]:
    """Twenty requests from one address, each with a new key: two admitted by the ip limit.
    Returns the template buckets held after the admitted ones and at the end (memory)."""
    statuses, buckets = [], []
    async with client(app) as http:
        for n in range(20):
            response = await http.post(
                "/v1/chat/completions", json=chat(n), headers={"authorization": f"Bearer sk-{n}"}
            )
            statuses.append(response.status_code)
            if n in (1, 19) and isinstance(app.risk.store, MemoryRiskStore):
                buckets.append(app.risk.store.sizes()["template buckets"])
    assert statuses == [200] * 2 + [429] * 18
    return (buckets[0], buckets[1]) if buckets else (0, 0)


async def test_requests_the_limits_refuse_create_no_principal(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Issue 11: each refused request with a new random key bought a principal."""
    app = build(tmp_path, clock, FLOODED)
    admitted, after = await flood_of_new_keys(app)
    store = app.risk.store  # type: ignore[union-attr]
    assert isinstance(store, MemoryRiskStore)
    assert store.sizes()["principals"] == 2  # the two admitted keys'
    assert after == admitted > 0  # and no template bucket from a refused prompt
    await app.shutdown()


async def flushed(app: Any) -> None:
    """What a worker sharing its risk state through Redis gathered is sent now."""
    if isinstance(app.risk.store, SharedRiskStore):
        await app.risk.store.flush()


@pytest.mark.parametrize("share", ["request", "10s"])
async def test_requests_the_limits_refuse_create_no_principal_in_redis(
    tmp_path: Path, clock: FakeClock, redis_url: str, share: str
) -> None:
    flooded = FLOODED.replace("risk:\n", f"risk:\n  share_every: {share}\n")
    app = build(tmp_path, clock, flooded, storage=redis_url)
    await flood_of_new_keys(app)
    await flushed(app)
    r = aioredis.from_url(redis_url)
    principals = [key async for key in r.scan_iter(match="*{r:k:*}")]
    assert len(principals) == 2  # the two admitted keys' (their hashes)

    # ... and the refusals of a principal already there are counted on it (by another worker:
    # this one refuses the address before the body now, from what it learnt, and assesses none)
    (tmp_path / "other").mkdir()
    other = build(tmp_path / "other", clock, flooded, storage=redis_url)
    try:
        async with client(other) as http:
            refused = await http.post("/v1/chat/completions", json=chat(0), headers=bearer("sk-0"))
            assert refused.status_code == 429
        await flushed(other)
        refusals = [float(await r.hget(key, "ref") or 0) for key in principals]
        assert sorted(refusals)[0] == 0 and sorted(refusals)[1] > 0  # sk-0's, not sk-1's
    finally:
        await r.aclose()
        await other.shutdown()
        await app.shutdown()


def status_app() -> Any:
    """Answers the status the request asks for (``x-status``), and the score guardrail gave it."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def chat(request: Request) -> Response:
        await request.body()
        score = str(request.state.guardrail.score)
        status = int(request.headers.get("x-status", "200"))
        headers = {"x-score": score}
        if "x-gzip" in request.headers:  # what guardrail cannot count on a metered route
            headers["content-encoding"] = "gzip"
        return Response(b"\x1f\x8b\x08\x00", status_code=status, headers=headers)

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


REFUSALS_ONLY = policy(0.0).replace("refusals: {weight: 0}", "refusals: {weight: 2.0}")


@pytest.mark.parametrize(("status", "fed"), [(500, False), (503, False), (404, True)])
async def test_only_the_apps_4xx_feed_the_refusals_signal(
    tmp_path: Path, clock: FakeClock, status: int, fed: bool
) -> None:
    """A 5xx is the app's failure, not the client's doing: it must not push the client up."""
    assert "refusals: {weight: 2.0}" in REFUSALS_ONLY
    app = build(tmp_path, clock, REFUSALS_ONLY, app=status_app())
    async with client(app) as http:
        for i in range(20):
            answer = await http.post(
                "/v1/chat/completions", json=chat(i), headers={**HEADERS, "x-status": str(status)}
            )
            assert answer.status_code == status
            clock.advance(1)
        answer = await http.post("/v1/chat/completions", json=chat(0), headers=HEADERS)
    await app.shutdown()
    score = float(answer.headers["x-score"])
    assert (score > 0) is fed, score


async def test_guardrails_own_502_does_not_feed_the_refusals_signal(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A compressed answer on a metered route is replaced by guardrail's 502: the client did
    nothing wrong."""
    metered = REFUSALS_ONLY.replace(
        "      - {per: api_key, rate: 600/minute, burst: 100}\n",
        "      - {per: api_key, rate: 600/minute, burst: 100}\n"
        "      - {per: api_key, rate: 100000/minute, cost: tokens}\n",
        1,
    )
    assert "cost: tokens" in metered
    app = build(tmp_path, clock, metered, app=status_app())
    async with client(app) as http:
        for i in range(20):
            answer = await http.post(
                "/v1/chat/completions", json=chat(i), headers={**HEADERS, "x-gzip": "1"}
            )
            assert answer.status_code == 502
            assert answer.json()["type"] == "uncountable-response"
            clock.advance(1)
        answer = await http.post("/v1/chat/completions", json=chat(0), headers=HEADERS)
    await app.shutdown()
    assert answer.status_code == 200
    assert float(answer.headers["x-score"]) == 0.0
