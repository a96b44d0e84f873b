"""Issue 11, finding 8: dense prompts overspent. Punctuation, digits and CJK tokenize far
denser than four bytes a token: concurrent requests reserved a quarter of what they used.
And a settlement that timed out kept a whole reservation charged. The prompt is reserved
conservatively now (pre-tokenizer pieces), and a failed settlement is retried."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx

from adversarial.conftest import served, token_budget
from examples.openai_server import FakeModel, build_app
from guardrail import Guardrail, Policy
from guardrail.backends.base import BucketCharge
from guardrail.identity import hash_key

from conftest import FakeClock
from helpers import SECRET

BURST = 1000
KEY = "sk-dense"
#: What tokenizes densest: brackets and operators, CJK, digits (500 characters, 650 bytes)
DENSE = ("{[(;)]}<=>?!&|" + "日本語" + "123") * 25


def policy(burst: int = BURST) -> str:
    return token_budget(burst)


async def test_concurrent_dense_prompts_stay_within_the_budget(clock: FakeClock) -> None:
    # The clock stands still: the bound is the burst alone (rate * t = 0).
    app = Guardrail(
        build_app(FakeModel(latency=0.01)), policy=Policy.from_string(policy()), clock=clock
    )
    body = {"model": "fake-1", "messages": [{"role": "user", "content": DENSE}], "max_tokens": 10}
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        replies = await asyncio.gather(
            *(
                http.post(
                    "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"}, json=body
                )
                for _ in range(20)
            )
        )
    admitted = [r for r in replies if r.status_code == 200]
    used = sum(r.json()["usage"]["total_tokens"] for r in admitted)  # as the app counts them
    assert {r.status_code for r in replies} <= {200, 429}
    # base: 5 admitted, 1,925 tokens used against a 1,000-token budget
    assert used <= BURST, f"{len(admitted)} admitted, {used} tokens used > {BURST}"


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    try:
        async with asyncio.timeout(10):
            while not await check():  # noqa: ASYNC110 (the server exposes no event)
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not within 10 s: {what}") from None


async def test_a_settlement_that_times_out_is_retried_and_gives_back_the_rest(
    clock: FakeClock, redis_url: str
) -> None:
    import redis.asyncio as aioredis

    admin = aioredis.from_url(redis_url)
    resumed = asyncio.Event()
    paused = False

    async def pause_on_first_token(seconds: float) -> None:  # the model's own sleep
        nonlocal paused
        if not paused:
            paused = True
            await admin.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")

    async def backoff(seconds: float) -> None:  # guardrail's sleep: over once Redis is back
        await resumed.wait()

    app = Guardrail(
        build_app(FakeModel(latency=0.001, sleep=pause_on_first_token)),
        policy=Policy.from_string(policy()),
        clock=clock,
        sleep=backoff,
        storage=f"{redis_url}?timeout=0.2",
    )
    subject = "api_key:" + hash_key(SECRET.encode(), KEY)
    lim = app.routes.routes[0].metered[0]
    read = BucketCharge(subject, lim.name, lim.interval, lim.burst, 0)

    async def left() -> int:
        return (await app.storage.charge([read], clock())).states[0].remaining

    body = {"model": "fake-1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        try:
            reply = await http.post(
                "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"}, json=body
            )
            assert reply.status_code == 200
            used = reply.json()["usage"]["total_tokens"]
            await asyncio.sleep(0.5)  # the settlement's attempt runs into the paused Redis
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")
            await admin.aclose()
        charged = BURST - await left()
        resumed.set()

        async def given_back() -> bool:
            return await left() == BURST - used

        # base: the reservation (prompt + 50) stays charged for good
        await _until(given_back, f"the unused reservation back: {await left()} != {BURST - used}")
    assert charged > used  # what stood until the retry: the whole reservation
    assert app.settlements.given_up == 0
