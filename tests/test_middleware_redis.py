"""The middleware against a real redis-server: shared buckets, one round trip, storage failures."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from helpers import CHAT, POLICY, audit_records, bearer, build, client
from redis_servers import Server, free_port


async def commandstats(url: str) -> dict[str, int]:
    r = aioredis.from_url(url)
    info = await r.info("commandstats")
    await r.aclose()
    return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()}


THREE_BUCKETS = POLICY.replace(
    "      - {per: subnet, rate: 100/minute, burst: 5}",
    "      - {per: subnet, rate: 100/minute, burst: 50}\n"
    "      - {per: ip, rate: 100/minute, burst: 50}",
).replace("rate: 10/minute, burst: 3", "rate: 10/minute, burst: 30")


@pytest.fixture
def own_redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server of the test's own, for tests that count every command it receives: the
    session's is watched by the Sentinel tests' sentinel, which PUBLISHes its hello to it every
    2 s (one landed in a count of a CI run)."""
    server = Server(tmp_path)
    yield server.url
    server.stop()


async def test_one_redis_round_trip_per_request(tmp_path: Path, clock, own_redis_url: str):
    redis_url = own_redis_url
    app = build(tmp_path, clock, THREE_BUCKETS, storage=redis_url)
    async with client(app) as http:
        await http.post(
            "/v1/chat/completions", json=CHAT, headers=bearer("sk-warm")
        )  # loads script
        before = await commandstats(redis_url)
        n = 25
        for _ in range(n):
            response = await http.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))
            assert response.status_code == 200
        after = await commandstats(redis_url)
    await app.shutdown()
    delta = {cmd: after.get(cmd, 0) - before.get(cmd, 0) for cmd in after}
    # The probe's own connection (HELLO, CLIENT SETINFO, INFO) is not the app's traffic.
    probe = {"info", "hello", "client|setinfo"}
    delta = {cmd: calls for cmd, calls in delta.items() if calls and cmd not in probe}
    # Redis 7 also counts the commands a script runs: 3 GETs and 3 SETs per call, all inside
    # the one EVALSHA round trip. Any other command from the client would show here.
    assert delta == {"evalsha": n, "get": 3 * n, "set": 3 * n}


async def test_four_processes_of_fifty_concurrent_requests_admit_exactly_one_hundred(
    redis_url: str,
):
    worker = Path(__file__).with_name("concurrency_worker.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(worker),
            f"{redis_url}?timeout=5",  # under load a slow reply must not pass for a failure
            "4",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outputs = [await asyncio.wait_for(p.communicate(), timeout=120) for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err.decode()
    counts = [tuple(map(int, out.split())) for out, _ in outputs]
    admitted = [ok for ok, _ in counts]
    assert sum(admitted) == 100, counts
    assert sum(limited for _, limited in counts) == 100, counts  # no 503: Redis decided all


async def test_instances_sharing_redis_share_buckets(tmp_path: Path, clock, redis_url: str):
    first = build(tmp_path, clock, storage=redis_url)
    second = build(tmp_path / "..", clock, storage=redis_url)
    async with client(first) as a, client(second) as b:
        assert (await a.get("/page")).status_code == 200
        assert (await b.get("/page")).status_code == 200
        assert (await a.get("/page")).status_code == 429
        assert (await b.get("/page")).status_code == 429
    await first.shutdown()
    await second.shutdown()


async def test_raw_api_key_appears_nowhere_in_redis_the_audit_file_or_the_logs(
    tmp_path: Path, clock, redis_url: str, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    raw = "sk-live-RAW-KEY-must-never-be-stored-0042"
    app = build(tmp_path, clock, storage=redis_url)
    async with client(app) as http:
        statuses = [
            (await http.post("/v1/chat/completions", json=CHAT, headers=bearer(raw))).status_code
            for _ in range(5)
        ]
    await app.shutdown()
    assert 429 in statuses  # records were written
    r = aioredis.from_url(redis_url)
    keys = await r.keys("*")
    assert keys
    stored = b" ".join(keys) + b" ".join([await r.dump(k) or b"" for k in keys])
    await r.aclose()
    assert raw.encode() not in stored
    assert b"RAW-KEY" not in stored
    audit_text = (tmp_path / "audit.jsonl").read_text()
    assert audit_records(tmp_path)
    assert raw not in audit_text and "RAW-KEY" not in audit_text
    assert caplog.records  # something was logged at DEBUG, and none of it is the key
    assert "RAW-KEY" not in caplog.text


DEAD = "redis://127.0.0.1:{port}/0?timeout=0.2"


async def test_fail_open_falls_back_to_a_local_limiter(tmp_path: Path, clock):
    app = build(tmp_path, clock, storage=DEAD.format(port=free_port()))
    async with client(app) as http:
        statuses = [(await http.get("/page")).status_code for _ in range(3)]
    await app.shutdown()
    assert statuses == [200, 200, 429]  # still limited, by the in-process fallback
    records = audit_records(tmp_path)
    assert records and all(r.get("degraded") for r in records)


async def test_fail_closed_answers_503(tmp_path: Path, clock):
    policy = POLICY.replace("version: 1", "version: 1\non_storage_error: fail_closed")
    app = build(tmp_path, clock, policy, storage=DEAD.format(port=free_port()))
    async with client(app) as http:
        response = await http.get("/page")
    await app.shutdown()
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["error"]["code"] == "service_unavailable"
    [record] = audit_records(tmp_path)
    assert record["status"] == 503 and record["storage_error"] is True


async def test_a_refusal_already_known_costs_no_round_trip(
    tmp_path: Path, clock, own_redis_url: str
):
    redis_url = own_redis_url
    app = build(tmp_path, clock, storage=redis_url)
    async with client(app) as http:
        statuses = [
            (await http.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))).status_code
            for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]  # the storage's refusal, learnt
        before = await commandstats(redis_url)
        for _ in range(10):
            response = await http.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))
            assert response.status_code == 429
        after = await commandstats(redis_url)
        other = await http.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-b"))
        assert other.status_code == 200  # another key: decided by the storage as ever
    await app.shutdown()
    probe = {"info", "hello", "client|setinfo"}
    delta = {cmd: after.get(cmd, 0) - before.get(cmd, 0) for cmd in after if cmd not in probe}
    assert not any(delta.values()), delta


async def test_an_open_breaker_decides_at_once_on_the_fallback(
    tmp_path: Path, clock, silent_server: int
):
    # A server that never answers: the start's PING and two charges time out, three failures
    # in a row (storage_breaker's default), and the breaker opens: no more waiting.
    app = build(tmp_path, clock, storage=f"redis://127.0.0.1:{silent_server}/0?timeout=0.2")
    waited = []
    async with client(app) as http:
        for _ in range(8):
            started = time.monotonic()
            assert (await http.get("/page")).status_code in (200, 429)
            waited.append(time.monotonic() - started)
    await app.shutdown()
    assert min(waited[:2]) >= 0.2  # each waited out a timeout
    assert max(waited[2:]) < 0.1
    records = audit_records(tmp_path)
    assert records and all(r.get("degraded") for r in records)  # the 429s, decided locally
