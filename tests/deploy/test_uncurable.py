"""Issue 12, item 6: a 429 that can never pass said ``Retry-After``. A chat request whose
reservation (prompt and max_tokens) is larger than the whole token budget got
``Retry-After: 73``, and the OpenAI SDK slept 146 s over 3 attempts for an answer it could never
get. Now such a refusal carries no Retry-After and ``x-should-retry: false``, which the SDK
obeys; an ordinary 429 still says how long to wait, and the SDK still waits and retries.

The real openai SDK (default ``max_retries``) against a real uvicorn on loopback; the server
counts the requests it receives."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import httpx
import openai
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from adversarial.conftest import served
from examples.openai_server import build_app
from guardrail import Guardrail, Policy
from guardrail.audit.reader import format_record

# 1,000 tokens a minute, at most 1,000 at once: a request reserving 2,200 is 1,200 over the
# whole budget; GCRA's "retry after" for it is 1,200 * 60 ms = 72 s (the 73 with the
# prompt), under the SDK's own 120 s cap, so before the fix the SDK slept it out, twice.
POLICY = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
identity:
  api_key: {header: authorization}
routes:
  - name: inference
    match: {path: "/v1/chat/completions$", methods: [POST]}
    inspect: openai
    headers: true
    limits:
      - {per: api_key, rate: 1/second, burst: 1}
      - {per: api_key, rate: 1000/minute, burst: 1000, cost: tokens}
"""

MESSAGES = [{"role": "user", "content": "Say hello."}]


class Counted:
    """What reached the server, outside guardrail: requests by path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen[scope["path"]] += 1
        await self.app(scope, receive, send)


def serve(tmp_path: Path) -> Counted:
    return Counted(
        Guardrail(
            build_app(),
            policy=Policy.from_string(POLICY),
            audit=f"file://{tmp_path / 'audit.jsonl'}",
        )
    )


async def test_the_openai_sdk_gives_up_at_once_on_a_request_larger_than_the_budget(
    tmp_path: Path,
) -> None:
    app = serve(tmp_path)
    async with served(app) as url:
        client = openai.AsyncOpenAI(api_key="sk-too-large", base_url=f"{url}/v1")
        started = time.monotonic()
        try:
            async with asyncio.timeout(5):
                with pytest.raises(openai.RateLimitError) as raised:
                    await client.chat.completions.create(
                        model="fake-1", messages=MESSAGES, max_tokens=2200
                    )
        except TimeoutError:
            # base: 1 request seen, the SDK asleep for its Retry-After (72 s, twice)
            raise AssertionError(
                f"the SDK still waits after 5 s: {app.seen['/v1/chat/completions']} request(s) "
                "seen, the 429 said to retry"
            ) from None
        finally:
            await client.close()
        elapsed = time.monotonic() - started
    seen = app.seen["/v1/chat/completions"]
    response = raised.value.response
    print(
        f"\nlarger than the budget: {seen} request(s) seen, {elapsed:.2f} s, "
        f"retry-after={response.headers.get('retry-after')!r}, "
        f"x-should-retry={response.headers.get('x-should-retry')!r}"
    )
    assert seen == 1 and elapsed < 1.0
    assert "retry-after" not in response.headers
    assert response.headers["x-should-retry"] == "false"
    body = response.json()
    assert body["type"] == "request-exceeds-budget" and body["retry_after"] is None
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert "never pass" in body["detail"] and "at most 1000" in body["detail"]
    # The budget is untouched and says so: full, nothing to wait for.
    assert '"api_key-tokens";r=1000;t=0' in response.headers["ratelimit"]
    assert response.headers["x-ratelimit-remaining-tokens"] == "1000"
    # The audit record says the same: no wait, and what the request outgrew.
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    (refused,) = [r for r in records if r["action"] == "limit"]
    limit = refused["limit"]
    assert (limit["retry_after"], limit["capacity"], refused["status"]) == (None, 1000, 429)
    assert limit["tokens"] > 2200
    assert "retry=never" in format_record(refused)  # guardrail audit tail


async def test_a_smaller_request_right_after_is_served(tmp_path: Path) -> None:
    """The refusal taught the worker nothing about the subject's buckets: the next request of
    the same key, one that fits, is decided on its own and served."""
    app = serve(tmp_path)
    async with served(app) as url, httpx.AsyncClient(base_url=url) as http:
        auth = {"authorization": "Bearer sk-same"}
        too_large = {"model": "fake-1", "messages": MESSAGES, "max_tokens": 2200}
        fits = {**too_large, "max_tokens": 20}
        first = await http.post("/v1/chat/completions", json=too_large, headers=auth)
        second = await http.post("/v1/chat/completions", json=fits, headers=auth)
    assert (first.status_code, second.status_code) == (429, 200)


async def test_an_ordinary_429_still_says_retry_after_and_the_sdk_retries_it(
    tmp_path: Path,
) -> None:
    app = serve(tmp_path)
    async with served(app) as url:
        client = openai.AsyncOpenAI(api_key="sk-ordinary", base_url=f"{url}/v1")
        first = await client.chat.completions.create(
            model="fake-1", messages=MESSAGES, max_tokens=20
        )
        started = time.monotonic()
        # The request bucket (1/second) is empty: 429 with Retry-After: 1, then served.
        raw = await client.chat.completions.with_raw_response.create(
            model="fake-1", messages=MESSAGES, max_tokens=20
        )
        elapsed = time.monotonic() - started
        await client.close()
    seen = app.seen["/v1/chat/completions"]
    print(f"\nordinary 429: {seen - 1} request(s) for one call, {elapsed:.2f} s")
    assert first.choices[0].message.content
    assert raw.http_response.status_code == 200
    assert seen == 3  # the first call, then the refused attempt and its retry
    assert elapsed >= 0.9  # the SDK waited as the Retry-After said
