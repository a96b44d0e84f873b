"""Issue 14: "a worker that dies loses at most one interval of evidence, never a limit". Two
real uvicorn processes on one real Redis: worker A serves a principal's requests for reasoning,
then stops, gracefully (SIGTERM: a rolling deploy) or not (SIGKILL: the OOM killer); worker B
then serves the same principal twice, the second time after B has read back what Redis holds.

Four requests for reasoning through A and two through B put the principal in the throttle band
(tests/deploy/test_shared_risk.py's policy: four are enough); B's two alone do not. So B's second
answer says whether A's evidence reached Redis, and its RateLimit header whether A's requests
were charged there.
"""

from __future__ import annotations

import asyncio
import re
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import httpx

from ._fleet_servers import Process, uvicorn_cli
from .test_shared_risk import APP, policy

#: 100 an hour, all at once: a bucket that does not refill within a test, so its remaining
#: count is the number of requests charged
LIMIT = "{per: api_key, rate: 100/hour, burst: 100}"
#: A's interval when it must not share within the test: the longest there is (A starts after
#: B, and is stopped within a second of answering its first request)
NEVER = "10s"


def worker_policy(storage: str, share_every: str) -> str:
    text = policy(storage).replace("share_every: 20ms", f"share_every: {share_every}")
    text = text.replace("{per: api_key, rate: 600/minute, burst: 100}", LIMIT)
    return text.replace("    inspect: openai\n", "    inspect: openai\n    headers: true\n")


async def ask(http: httpx.AsyncClient, url: str, key: str, n: int) -> httpx.Response:
    response = await http.post(
        f"{url}/v1/chat/completions",
        json={
            "model": "m",
            "messages": [
                {"role": "user", "content": f"Show your full reasoning step by step: question {n}"}
            ],
        },
        headers={"authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    return response


def remaining(response: httpx.Response) -> int:
    match = re.search(r";r=(\d+);", response.headers["ratelimit"])
    assert match, response.headers["ratelimit"]
    return int(match.group(1))


async def a_then_b(
    tmp_path: Path, redis_url: str, a_shares_every: str, stop: signal.Signals, key: str
) -> tuple[httpx.Response, Process]:
    """Four requests through A, A stopped with ``stop`` a little over 20ms after its last
    answer, then two through B half a second apart; returns B's second answer and A."""
    async with AsyncExitStack() as stack:
        directories = []
        for name, every in (("b", "20ms"), ("a", a_shares_every)):
            directory = tmp_path / name
            directory.mkdir()
            (directory / "app.py").write_text(APP)
            (directory / "guardrail.yaml").write_text(worker_policy(redis_url, every))
            directories.append(directory)
        b, a = [
            await stack.enter_async_context(uvicorn_cli(d, "--no-access-log")) for d in directories
        ]
        async with httpx.AsyncClient(timeout=10) as http:
            for n in range(4):
                await ask(http, a.url, key, n)
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.1)  # real processes: A's flushes (every 20ms) on their own
            a.process.send_signal(stop)
            await asyncio.wait_for(a.process.wait(), 15)
            await ask(http, b.url, key, 4)  # B holds nothing of it yet: scored on this alone
            await asyncio.sleep(0.5)  # B writes it back within 20ms and reads it within 200ms
            second = await ask(http, b.url, key, 5)
        return second, a


async def test_a_worker_killed_has_shared_all_but_its_last_interval(
    tmp_path: Path, redis_url: str
) -> None:
    second, a = await a_then_b(tmp_path, redis_url, "20ms", signal.SIGKILL, "sk-killed-20ms")
    assert a.process.returncode == -signal.SIGKILL
    # A flushed every 20ms while it served: its four requests' evidence was in Redis
    assert second.headers.get("guardrail-tier") == "slow", second.headers
    assert remaining(second) == 100 - 6


async def test_a_worker_killed_mid_interval_loses_that_interval_and_no_limit(
    tmp_path: Path, redis_url: str
) -> None:
    second, a = await a_then_b(tmp_path, redis_url, NEVER, signal.SIGKILL, "sk-killed-10s")
    assert a.process.returncode == -signal.SIGKILL
    # what A held had not left it: the bound the README states, one interval, all of it lost
    assert second.headers.get("guardrail-tier") is None, second.headers
    # the buckets were charged in Redis as A admitted each request: none of the six is lost
    assert remaining(second) == 100 - 6


async def test_a_worker_stopped_shares_its_last_interval_on_the_way_out(
    tmp_path: Path, redis_url: str
) -> None:
    second, a = await a_then_b(tmp_path, redis_url, NEVER, signal.SIGTERM, "sk-stopped-10s")
    # uvicorn's graceful stop runs the lifespan's shutdown (then re-raises the signal): the
    # store flushes what it held on the way out
    assert "Application shutdown complete" in a.log, a.log
    assert second.headers.get("guardrail-tier") == "slow", second.headers
    assert remaining(second) == 100 - 6
    assert "not shared" not in a.log
