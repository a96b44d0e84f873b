"""Token budgets through the real OpenAI SDK against the example server: reserved at admission,
settled from usage (or from what was streamed), given back when the client leaves or the app
fails, never overspent by concurrent requests (memory and Redis), and a stream that runs
out of budget ends with an error event the SDK raises."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from examples.openai_server import FakeModel, build_app
from guardrail import Guardrail, Policy
from guardrail.backends.base import BucketCharge
from guardrail.identity import hash_key
from guardrail.metering import delta_tokens
from guardrail.relay import BUDGET_OUTGROWN, BUDGET_SPENT

from conftest import FakeClock
from helpers import SECRET, audit_records
from redis_servers import free_port

KEY = "sk-budget-1"
ASK = "why is the sky blue"  # 19 bytes: 5 tokens, plus 4 for the message: 9
PROMPT = 9  # guardrail's estimate of ASK as one user message
PROMPT_USAGE = 5  # the fake model's count: five words


def policy(burst: int = 1000, default_max_tokens: int = 200, extra: str = "") -> str:
    return f"""
version: 1
secret: env:GUARDRAIL_TEST_SECRET
identity:
  api_key: {{header: authorization}}
routes:
  - name: inference
    match: {{path: "/v1/(chat/completions|completions|responses)$", methods: [POST]}}
    inspect: openai
    headers: true
    default_max_tokens: {default_max_tokens}
    limits:
      - {{per: api_key, rate: 1000/day, burst: {burst}, cost: tokens}}
audit: {{sample_allowed: 1.0}}
{extra}
"""


def serve(
    tmp_path: Path,
    clock: FakeClock,
    text: str | None = None,
    *,
    model: FakeModel | None = None,
    storage: str | None = None,
    app: Any = None,
) -> Guardrail:
    return Guardrail(
        app or build_app(model or FakeModel()),
        policy=Policy.from_string(text or policy()),
        clock=clock,
        sleep=clock.sleep,
        storage=storage,
        audit=f"file://{tmp_path / 'audit.jsonl'}",
    )


def sdk(app: Any, key: str = KEY) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("203.0.113.7", 4000)))
    return openai.AsyncOpenAI(
        api_key=key, base_url="http://testserver/v1", http_client=http, max_retries=0
    )


async def tokens_left(app: Guardrail, clock: FakeClock, key: str = KEY) -> int:
    """What the key's token bucket holds now (a cost-0 read of the route's token limit)."""
    route = next(r for r in app.routes.routes if r.metered)
    lim = route.metered[0]
    subject = "api_key:" + hash_key(SECRET.encode(), key)
    read = BucketCharge(subject, lim.name, lim.interval, lim.burst, 0)
    return (await app.storage.charge([read], clock())).states[0].remaining


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "fake-1", "messages": [{"role": "user", "content": ASK}], **extra}


# -- settled from usage ----------------------------------------------------------------------


async def test_a_json_response_is_settled_to_its_usage(tmp_path: Path, clock: FakeClock) -> None:
    app = serve(tmp_path, clock)
    client = sdk(app)
    raw = await client.chat.completions.with_raw_response.create(**chat(max_tokens=50))
    reply = raw.parse()
    # reserved at admission: the prompt's estimate and max_tokens, before any body byte
    assert raw.headers["x-ratelimit-limit-tokens"] == "1000"
    assert raw.headers["x-ratelimit-remaining-tokens"] == str(1000 - PROMPT - 50)
    assert '"api_key-tokens";r=941' in raw.headers["ratelimit"]
    assert '"api_key-tokens";q=1000' in raw.headers["ratelimit-policy"]
    # settled after the response to what it used
    assert reply.usage is not None and reply.usage.total_tokens == PROMPT_USAGE + 50
    assert await tokens_left(app, clock) == 1000 - 55
    await client.close()
    await app.shutdown()
    [record] = audit_records(tmp_path)
    assert record["tokens"] == {"reserved": PROMPT + 50, "used": 55}


async def test_a_stream_is_settled_to_its_final_usage(tmp_path: Path, clock: FakeClock) -> None:
    app = serve(tmp_path, clock)
    client = sdk(app)
    stream = await client.chat.completions.create(
        **chat(max_tokens=40, stream=True, stream_options={"include_usage": True})
    )
    chunks = [chunk async for chunk in stream]
    usage = chunks[-1].usage
    assert usage is not None and usage.total_tokens == PROMPT_USAGE + 40
    assert await tokens_left(app, clock) == 1000 - 45
    await client.close()
    await app.shutdown()


async def test_a_stream_without_usage_is_settled_to_what_it_carried(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = serve(tmp_path, clock)
    client = sdk(app)
    stream = await client.chat.completions.create(**chat(max_tokens=40, stream=True))
    pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    counted = sum(delta_tokens(piece) for piece in pieces if piece)
    assert len([p for p in pieces if p]) == 40 and counted >= 40
    assert await tokens_left(app, clock) == 1000 - PROMPT - counted
    await client.close()
    await app.shutdown()


@pytest.mark.parametrize("stream", [False, True])
async def test_completions_and_responses_settle_from_their_usage(
    tmp_path: Path, clock: FakeClock, stream: bool
) -> None:
    app = serve(tmp_path, clock)
    client = sdk(app)
    if stream:
        text = await client.completions.create(
            model="fake-1",
            prompt=ASK,
            max_tokens=30,
            stream=True,
            stream_options={"include_usage": True},
        )
        used = [c.usage.total_tokens async for c in text if c.usage].pop()
    else:
        completion = await client.completions.create(model="fake-1", prompt=ASK, max_tokens=30)
        assert completion.usage is not None
        used = completion.usage.total_tokens
    assert used == PROMPT_USAGE + 30
    assert await tokens_left(app, clock) == 1000 - used

    if stream:
        events = await client.responses.create(
            model="fake-1", input=ASK, max_output_tokens=20, stream=True
        )
        kinds = [event.type async for event in events]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    else:
        response = await client.responses.create(model="fake-1", input=ASK, max_output_tokens=20)
        assert response.output_text.startswith("Here is an answer")
        assert response.usage is not None and response.usage.total_tokens == 25
    assert await tokens_left(app, clock) == 1000 - used - (PROMPT_USAGE + 20)
    await client.close()
    await app.shutdown()


# -- given back ------------------------------------------------------------------------------


async def test_a_refusal_by_the_app_gives_the_whole_reservation_back(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = serve(tmp_path, clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        response = await http.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {KEY}"},
            json={"model": "fake-1", "prompt_typo": ASK},
        )
    assert response.status_code == 400  # the app's own answer
    assert response.headers["x-ratelimit-remaining-tokens"] == str(1000 - 200)  # the default
    assert await tokens_left(app, clock) == 1000
    await app.shutdown()


async def test_an_app_that_fails_gives_the_whole_reservation_back(
    tmp_path: Path, clock: FakeClock
) -> None:
    async def broken(request: Request) -> Response:
        await request.body()
        raise RuntimeError("the model server fell over")

    inner = Starlette(routes=[Route("/v1/chat/completions", broken, methods=["POST"])])
    app = serve(tmp_path, clock, app=inner)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://testserver",
    ) as http:
        response = await http.post(
            "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"}, json=chat()
        )
    assert response.status_code == 500
    assert await tokens_left(app, clock) == 1000
    await app.shutdown()


class Tap:
    """The fake model's clock: each token waits for the test to let it through."""

    def __init__(self) -> None:
        self.tokens = asyncio.Semaphore(0)
        self.cancelled = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        try:
            await self.tokens.acquire()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait (at most 10 s) for something a real server does in its own time."""
    try:
        async with asyncio.timeout(10):
            while not await check():  # noqa: ASYNC110 (the server exposes no event)
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not within 10 s: {what}") from None


async def test_a_client_that_leaves_mid_stream_gets_the_unused_part_back(
    tmp_path: Path, clock: FakeClock
) -> None:
    tap = Tap()
    app = serve(tmp_path, clock, model=FakeModel(latency=1.0, sleep=tap.sleep))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    try:
        await until(lambda: _true(server.started), "uvicorn started")
        client = openai.AsyncOpenAI(
            api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0
        )
        stream = await client.chat.completions.create(**chat(stream=True))  # no max_tokens
        assert await tokens_left(app, clock) == 1000 - PROMPT - 200  # the default, reserved
        pieces: list[str] = []
        for _ in range(10):
            tap.tokens.release()
        async for chunk in stream:
            pieces.append(chunk.choices[0].delta.content or "")
            if len(pieces) == 11:  # the role chunk and ten tokens
                break
        await stream.close()  # the client leaves mid-stream
        await asyncio.wait_for(tap.cancelled.wait(), 10)  # the server saw it go
        carried = sum(delta_tokens(piece) for piece in pieces if piece)
        await until(lambda: _equal(tokens_left(app, clock), 1000 - PROMPT - carried), "settled")
        await client.close()
    finally:
        server.should_exit = True
        await serving
    [record] = audit_records(tmp_path)
    assert record["tokens"] == {"reserved": PROMPT + 200, "used": PROMPT + carried}


async def _true(value: bool) -> bool:
    return value


async def _equal(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


# -- concurrency -----------------------------------------------------------------------------


async def _yield(seconds: float) -> None:
    await asyncio.sleep(0)  # a token at a time, every stream in turn


class Overlapping(FakeModel):
    """Streams that take turns token by token, and that start only once every request of the
    batch has been admitted or refused (the SDK's own awaits must not let one stream finish,
    and settle, before another is decided). Counts how many ran at once."""

    def __init__(self, batch: int = 0) -> None:
        super().__init__(latency=0.001, sleep=_yield)
        self.batch = batch
        self.decided = 0
        self.gate = asyncio.Event()
        self.active = self.most = 0

    def decide(self) -> None:
        self.decided += 1
        if self.decided >= self.batch:
            self.gate.set()

    async def stream(self, tokens: list[str]) -> AsyncIterator[str]:
        self.decide()  # admitted
        await self.gate.wait()
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            async for token in super().stream(tokens):
                yield token
        finally:
            self.active -= 1


async def _concurrent(apps: list[Guardrail], model: Overlapping) -> list[int]:
    """20 streamed requests at once (spread over ``apps``), each with max_tokens 300 and an
    answer of 120 to 160 tokens: the usage of each one served."""

    async def one(index: int) -> int | None:
        client = sdk(apps[index % len(apps)])
        try:
            stream = await client.chat.completions.create(
                **chat(max_tokens=300, stream=True, stream_options={"include_usage": True})
            )
            return [c.usage.total_tokens async for c in stream if c.usage].pop()
        except openai.RateLimitError as refused:
            assert refused.response.headers["x-ratelimit-limit-tokens"] == "1000"
            model.decide()
            return None
        finally:
            await client.close()

    results = await asyncio.gather(*(one(i) for i in range(model.batch)))
    return [r for r in results if r is not None]


async def test_twenty_concurrent_streams_never_overspend_a_budget(
    tmp_path: Path, clock: FakeClock
) -> None:
    model = Overlapping(batch=20)
    app = serve(tmp_path, clock, model=model)
    served = await _concurrent([app], model)
    # Each reserves 9 + 300 while the others are in flight: three fit in 1000. Charged only
    # what they used (about 150 each), six would have been served one after the other, and
    # all twenty at once.
    assert len(served) == 3 and model.most == 3
    assert sum(served) <= 1000
    assert await tokens_left(app, clock) == 1000 - sum(served)
    await app.shutdown()  # the audit trail is written in the background: flushed here
    records = audit_records(tmp_path)
    # The 17 refusals of one bucket: the first in full, the other 16 as one "repeated" record.
    assert [r.get("repeated", 1) for r in records if r["action"] == "limit"] == [1, 16]
    assert sorted(r["action"] for r in records) == ["allow"] * 3 + ["limit"] * 2


async def test_twenty_concurrent_streams_through_two_workers_on_redis_never_overspend(
    tmp_path: Path, clock: FakeClock, redis_url: str
) -> None:
    model = Overlapping(batch=20)
    workers = [serve(tmp_path, clock, model=model, storage=redis_url) for _ in range(2)]
    served = await _concurrent(workers, model)
    assert len(served) == 3 and model.most == 3
    assert sum(served) <= 1000
    assert await tokens_left(workers[0], clock) == 1000 - sum(served)
    assert await tokens_left(workers[1], clock) == 1000 - sum(served)
    for worker in workers:
        await worker.shutdown()


async def test_served_one_after_another_the_same_budget_serves_what_it_holds(
    tmp_path: Path, clock: FakeClock
) -> None:
    # the control for the two tests above: settled between requests, the budget goes further
    app = serve(tmp_path, clock, model=Overlapping(batch=1))
    client = sdk(app)
    served = 0
    for _ in range(20):
        try:
            await client.chat.completions.create(**chat(max_tokens=300))
        except openai.RateLimitError:
            break
        served += 1
    assert served == 6
    await client.close()
    await app.shutdown()


# -- a budget spent mid-stream ---------------------------------------------------------------


async def test_a_stream_that_outgrows_its_budget_ends_with_an_error_the_sdk_raises(
    tmp_path: Path, clock: FakeClock
) -> None:
    # no max_tokens: 9 + 50 reserved, the answer runs to 120 tokens or more, the budget is 100
    app = serve(tmp_path, clock, policy(burst=100, default_max_tokens=50))
    client = sdk(app)
    stream = await client.chat.completions.create(**chat(stream=True))
    pieces: list[str] = []
    with pytest.raises(openai.APIError) as raised:
        async for chunk in stream:
            pieces.append(chunk.choices[0].delta.content or "")
    # the answer alone is more than the budget ever holds: not "retry after it refills"
    assert raised.value.message == BUDGET_OUTGROWN.format(capacity=100)
    counted = sum(delta_tokens(piece) for piece in pieces if piece)
    assert PROMPT + counted <= 100  # what was delivered fits the budget
    assert await tokens_left(app, clock) == 100 - PROMPT - counted
    await client.close()
    await app.shutdown()
    [record] = audit_records(tmp_path)
    assert record["action"] == "limit" and record["status"] == 200
    assert record["tokens"] == {"reserved": PROMPT + 50, "used": PROMPT + counted}


async def test_a_stream_cut_by_a_budget_others_spent_says_to_retry(
    tmp_path: Path, clock: FakeClock
) -> None:
    # The answer (at most 160 tokens and the prompt) fits the full budget of 200; an earlier
    # request of the key spent 105 of it, so this one is cut, and waiting is the cure.
    app = serve(tmp_path, clock, policy(burst=200, default_max_tokens=50))
    client = sdk(app)
    await client.chat.completions.create(**chat(max_tokens=100))
    assert await tokens_left(app, clock) == 200 - PROMPT_USAGE - 100  # settled to its usage
    stream = await client.chat.completions.create(**chat(stream=True))
    with pytest.raises(openai.APIError) as raised:
        async for _ in stream:
            pass
    assert raised.value.message == BUDGET_SPENT
    await client.close()
    await app.shutdown()


async def test_the_cut_stream_is_whole_events_then_done(tmp_path: Path, clock: FakeClock) -> None:
    app = serve(tmp_path, clock, policy(burst=100, default_max_tokens=50))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        response = await http.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {KEY}"},
            json=chat(stream=True),
        )
    await app.shutdown()
    assert response.status_code == 200
    # the token headers came with the response's head, before its first event
    assert response.headers["x-ratelimit-remaining-tokens"] == str(100 - PROMPT - 50)
    assert response.headers["x-ratelimit-limit-tokens"] == "100"
    assert response.text.endswith("\n\n")
    events = response.text.split("\n\n")[:-1]
    assert all(event.startswith("data: ") and "\n" not in event for event in events)
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    assert payloads[-1]["error"]["code"] == "rate_limit_exceeded"
    assert all("choices" in payload for payload in payloads[:-1])  # whole chunks before it


async def test_in_mode_observe_a_spent_budget_ends_no_stream(
    tmp_path: Path, clock: FakeClock
) -> None:
    text = policy(burst=100, default_max_tokens=50).replace(
        "version: 1", "version: 1\nmode: observe"
    )
    text = text.replace("env:GUARDRAIL_TEST_SECRET", "observe-literal-secret")
    app = serve(tmp_path, clock, text)
    client = sdk(app)
    stream = await client.chat.completions.create(**chat(stream=True))
    pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert len([p for p in pieces if p]) >= 120  # the whole answer: nothing was cut
    await client.close()
    await app.shutdown()
    [record] = audit_records(tmp_path)
    # the budget was charged what the stream used, past its burst: it is in debt
    assert record["action"] == "allow"
    assert record["tokens"]["used"] == PROMPT + len([p for p in pieces if p]) > 100


async def test_a_request_larger_than_the_budget_is_told_it_can_never_pass(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = serve(tmp_path, clock)
    client = sdk(app)
    with pytest.raises(openai.RateLimitError) as raised:
        await client.chat.completions.create(**chat(max_tokens=5000))
    assert "can never pass" in raised.value.message
    assert raised.value.response.headers["x-ratelimit-remaining-tokens"] == "1000"
    assert await tokens_left(app, clock) == 1000  # nothing was taken
    await client.close()
    await app.shutdown()


# -- a storage that fails --------------------------------------------------------------------


async def test_with_redis_down_fail_open_reserves_and_settles_in_the_local_fallback(
    tmp_path: Path, clock: FakeClock, silent_server: int, caplog: pytest.LogCaptureFixture
) -> None:
    app = serve(tmp_path, clock, storage=f"redis://127.0.0.1:{silent_server}/0?timeout=0.05")
    client = sdk(app)
    raw = await client.chat.completions.with_raw_response.create(**chat(max_tokens=50))
    assert raw.headers["x-ratelimit-remaining-tokens"] == str(1000 - PROMPT - 50)
    assert app.fallback is not None
    read = BucketCharge("api_key:" + hash_key(SECRET.encode(), KEY), "inference:0", 86.4, 1000, 0)
    assert (await app.fallback.charge([read], clock())).states[0].remaining == 1000 - 55
    await client.close()
    await app.shutdown()
    [record] = audit_records(tmp_path)
    assert record["degraded"] is True and record["tokens"]["used"] == 55
    assert "storage error, applying on_storage_error=fail_open" in caplog.text


class WritesPaused:
    """A model whose first token pauses the real Redis for writes (``CLIENT PAUSE … WRITE``):
    what was admitted stays admitted, and every later script call times out."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self.admin = aioredis.from_url(url)
        self.paused = False

    def model(self) -> FakeModel:
        return FakeModel(latency=0.001, sleep=self.sleep)

    async def sleep(self, seconds: float) -> None:
        if not self.paused:
            self.paused = True
            await self.admin.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")

    async def resume(self) -> None:
        await self.admin.execute_command("CLIENT", "UNPAUSE")
        await self.admin.aclose()


async def test_a_settlement_that_fails_says_so_and_is_tried_again(
    tmp_path: Path, clock: FakeClock, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    redis = WritesPaused(redis_url)
    app = serve(tmp_path, clock, model=redis.model(), storage=f"{redis_url}?timeout=0.2")
    client = sdk(app)
    try:
        await client.chat.completions.create(**chat(max_tokens=50))  # settled while paused
    finally:
        await redis.resume()
    # tried again (on the injected clock's sleep) once Redis takes writes
    await until(lambda: _equal(tokens_left(app, clock), 1000 - PROMPT_USAGE - 50), "settled")
    assert "storage error, applying on_storage_error=fail_open" in caplog.text
    await client.close()
    await app.shutdown()


# -- found in review -------------------------------------------------------------------------


async def test_a_request_cancelled_during_its_tier_delay_gives_its_reservation_back(
    tmp_path: Path, clock: FakeClock
) -> None:
    text = policy(
        extra="thresholds: [{score: 0, action: throttle, tier: slow}]\ntiers: {slow: {delay: 2s}}"
    )
    started = asyncio.Event()

    async def held(seconds: float) -> None:  # the tier's delay, never over
        started.set()
        await asyncio.Event().wait()

    app = Guardrail(
        build_app(FakeModel()),
        policy=Policy.from_string(text),
        clock=clock,
        sleep=held,
        audit=f"file://{tmp_path / 'audit.jsonl'}",
    )
    client = sdk(app)
    request = asyncio.ensure_future(client.chat.completions.create(**chat(max_tokens=50)))
    await asyncio.wait_for(started.wait(), 10)
    assert await tokens_left(app, clock) == 1000 - PROMPT - 50  # reserved, then waiting
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert await tokens_left(app, clock) == 1000  # nothing was generated: all given back
    await client.close()
    await app.shutdown()


async def test_a_body_too_large_to_read_reserves_its_size_as_prompt(
    tmp_path: Path, clock: FakeClock
) -> None:
    text = policy(burst=5000).replace("headers: true", "headers: true\n    inspect_max_bytes: 1KB")
    app = serve(tmp_path, clock, text)
    big = chat(max_tokens=10)
    big["messages"][0]["content"] = "x" * 3000
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        response = await http.post(
            "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"}, json=big
        )
    await app.shutdown()
    assert response.status_code == 200
    size = len(response.request.content)
    prompt = (size + 3) // 4  # not read, so not parsed: four bytes a token, and the default
    assert response.headers["x-ratelimit-remaining-tokens"] == str(5000 - prompt - 200)


async def test_a_silent_tier_keeps_its_limits_out_of_the_headers(
    tmp_path: Path, clock: FakeClock
) -> None:
    extra = (
        "thresholds: [{score: 0, action: throttle, tier: slow}]\n"
        "tiers: {slow: {limits: [{per: ip, rate: 7/minute}]}}"
    )
    text = policy(extra=extra).replace(
        "      - {per: api_key, rate: 1000/day",
        "      - {per: ip, rate: 999/minute}\n      - {per: api_key, rate: 1000/day",
    )
    app = serve(tmp_path, clock, text)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        for body in (chat(max_tokens=5), {"model": "m", "messages": [], "max_tokens": 0}):
            response = await http.post(
                "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"}, json=body
            )
            assert response.status_code == 200
            assert "tier" not in response.headers["ratelimit"]
            assert "tier" not in response.headers["ratelimit-policy"]
            assert response.headers["x-ratelimit-limit-requests"] == "999"
            assert '"api_key-tokens"' in response.headers["ratelimit-policy"]
    await app.shutdown()


async def test_under_fail_open_a_storage_failing_mid_stream_is_asked_once(
    tmp_path: Path, clock: FakeClock, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # no max_tokens: 9 + 20 reserved, then the stream needs more, and Redis has stopped
    # taking writes: the one extension asked for times out, and the stream goes on unwatched
    redis = WritesPaused(redis_url)
    text = policy(default_max_tokens=20)
    app = serve(tmp_path, clock, text, model=redis.model(), storage=f"{redis_url}?timeout=0.2")
    calls = 0
    charge = app.storage.charge

    async def counted(charges: Any, now: float) -> Any:  # the real charge, counted
        nonlocal calls
        calls += 1
        return await charge(charges, now)

    app.storage.charge = counted  # type: ignore[method-assign]
    client = sdk(app)
    try:
        stream = await client.chat.completions.create(**chat(stream=True))
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    finally:
        await redis.resume()
    assert len([p for p in pieces if p]) >= 120  # served to the end (fail_open)
    assert calls == 2  # the admission, then one extension: never asked again
    assert "storage error, applying on_storage_error=fail_open" in caplog.text
    await client.close()
    await app.shutdown()


@pytest.mark.parametrize("known", [False, True])
async def test_a_request_cancelled_while_its_risk_write_is_out_gives_its_reservation_back(
    tmp_path: Path, clock: FakeClock, redis_url: str, known: bool
) -> None:
    # Redis: the risk write goes out alongside the bucket charge for a principal already
    # there, after it for one it creates; the request is cancelled (its client left) after the
    # charge, while the write is still out
    text = policy(extra="risk: {share_every: request}\nthresholds: [{score: 99, action: block}]")
    app = serve(tmp_path, clock, text, storage=redis_url)
    writing = asyncio.Event()
    spent = 0
    if known:  # a first request makes the principal known
        first = sdk(app)
        await first.chat.completions.create(**chat(max_tokens=50))
        await first.close()
        await app.settlements.wait()
        spent = 1000 - await tokens_left(app, clock)

    async def slow_commit(assessment: Any, now: float, admitted: bool = True) -> None:
        writing.set()
        await asyncio.Event().wait()

    app._commit = slow_commit  # type: ignore[method-assign]
    client = sdk(app)
    request = asyncio.ensure_future(client.chat.completions.create(**chat(max_tokens=50)))
    await asyncio.wait_for(writing.wait(), 10)
    await until(lambda: _equal(tokens_left(app, clock), 1000 - spent - PROMPT - 50), "charged")
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await until(lambda: _equal(tokens_left(app, clock), 1000 - spent), "given back")
    await client.close()
    await app.shutdown()


# -- settlements tried again -----------------------------------------------------------------


async def test_a_settlement_the_storage_keeps_failing_is_given_up_and_said(
    clock: FakeClock, silent_server: int, caplog: pytest.LogCaptureFixture
) -> None:
    from guardrail import budgets
    from guardrail.backends import storage_from_uri

    storage = storage_from_uri(f"redis://127.0.0.1:{silent_server}/0?timeout=0.02")
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    warned: list[Exception] = []
    settlements = budgets.Settlements(warned.append, sleep, clock)
    move = BucketCharge("api_key:k", "inference:0", 1.0, 100, -40)
    settlements.settle(storage, [move], clock())
    await asyncio.gather(*settlements._pending)  # the first attempt hands it to its retry
    [retrying] = settlements._retries
    await retrying  # five attempts, each a storage timeout
    assert len(warned) == 1  # the first failure is said; the retries back off, then give up
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert settlements.given_up == 1
    assert "1 token settlement(s) given up (5 more attempts failed" in caplog.text
    assert "40 tokens stay charged" in caplog.text
    await storage.close()


async def test_settlements_waiting_to_be_tried_again_are_bounded(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from guardrail import budgets
    from guardrail.backends.memory import MemoryStorage

    monkeypatch.setattr(budgets, "RETRY_MAX", 2)
    never = asyncio.Event()

    async def sleep(seconds: float) -> None:  # the storage never comes back in this test
        await never.wait()

    settlements = budgets.Settlements(lambda exc: None, sleep, clock)
    move = BucketCharge("api_key:k", "inference:0", 1.0, 100, -40)
    for _ in range(3):
        settlements.retry(MemoryStorage(), [move])
    assert len(settlements._retries) == 2 and settlements.given_up == 1
    await settlements.wait()  # shutdown: the waiting ones are given up, not waited for
    assert settlements.given_up == 3 and not settlements._retries
