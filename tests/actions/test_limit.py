"""The limit action (actions/limit.py): an ordinary 429 says how long to wait; one that no wait
cures (a request larger than a whole budget, the route's or its tier's) says not to retry, in
the words SDKs read, with the RateLimit headers reporting each bucket as it stands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from guardrail.actions.limit import send_limited
from guardrail.limits import LimitHit

from conftest import FakeClock
from helpers import audit_records, bearer, build, client


async def sent(hit: LimitHit) -> tuple[dict[bytes, bytes], dict[str, Any]]:
    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await send_limited(send, hit=hit, request_id="rid", headers=[(b"ratelimit", b"x")])
    start, body = messages
    assert start["status"] == 429
    return dict(start["headers"]), json.loads(body["body"])


async def test_a_request_larger_than_the_budget_is_told_not_to_retry() -> None:
    headers, body = await sent(LimitHit("api_key", "1000/minute", 1000, None, 1000, 2200))
    assert b"retry-after" not in headers
    assert headers[b"x-should-retry"] == b"false"
    assert headers[b"guardrail-action"] == b"limit" and headers[b"ratelimit"] == b"x"
    assert body["type"] == "request-exceeds-budget" and body["retry_after"] is None
    assert body["error"]["code"] == body["error"]["type"] == "rate_limit_exceeded"
    assert "needs 2200 tokens" in body["detail"] and "at most 1000" in body["detail"]
    assert "Retry after" not in body["detail"]


async def test_an_ordinary_refusal_says_how_long_to_wait() -> None:
    headers, body = await sent(LimitHit("api_key", "1000/minute", 10, 7, 1000, 500))
    assert headers[b"retry-after"] == b"7" and b"x-should-retry" not in headers
    assert body["type"] == "quota-exceeded" and body["retry_after"] == 7
    assert body["detail"].endswith("Retry after 7 seconds.")


POLICY = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
identity:
  api_key: {header: authorization}
routes:
  - name: inference
    match: {path: /v1/chat/completions}
    inspect: openai
    headers: true
    limits:
      - {per: api_key, rate: 2/minute, burst: 1}
      - {per: api_key, rate: 1000/minute, burst: 1000, cost: tokens}
"""

TIERED = (
    POLICY
    + """
thresholds: [{score: 0, action: throttle, tier: slow}]
tiers:
  slow:
    header: true
    limits: [{per: api_key, rate: 100/minute, burst: 100, cost: tokens}]
"""
)


def ask(max_tokens: int) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}


async def post(http: httpx.AsyncClient, max_tokens: int) -> httpx.Response:
    return await http.post("/v1/chat/completions", json=ask(max_tokens), headers=bearer("sk-1"))


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> str | None:
    if request.param == "memory":
        return None
    return str(request.getfixturevalue("redis_url"))


async def test_it_outranks_a_request_bucket_that_is_empty_too(
    tmp_path: Path, clock: FakeClock, storage: str | None
) -> None:
    """Waiting out the request bucket would only meet the budget's refusal again; the next,
    smaller request meets the request bucket alone: an ordinary 429, refused before its body.
    Alike from either storage (gcra.lua is gcra's transcription)."""
    app = build(tmp_path, clock, POLICY, storage=storage)
    async with client(app) as http:
        assert (await post(http, 10)).status_code == 200
        larger = await post(http, 5000)
        smaller = await post(http, 10)
    await app.shutdown()
    assert larger.status_code == 429 and "retry-after" not in larger.headers
    assert larger.headers["x-should-retry"] == "false"
    # Each bucket as it stands: the request bucket's wait, the full budget's own state.
    ratelimit = larger.headers["ratelimit"]
    assert '"api_key";r=0;t=30' in ratelimit, ratelimit
    # the budget: 24 tokens reserved by the first request, full again in 1.44 s (base: t=242,
    # the wait for a reservation it can never hold)
    assert ratelimit == '"api_key";r=0;t=30, "api_key-tokens";r=976;t=2'
    assert larger.headers["x-ratelimit-reset-tokens"] == "2s"
    assert larger.headers["x-ratelimit-reset-requests"] == "30s"
    assert smaller.status_code == 429 and smaller.headers["retry-after"] == "30"
    assert "x-should-retry" not in smaller.headers
    limits = [r["limit"] for r in audit_records(tmp_path) if r["action"] == "limit"]
    assert [lim["retry_after"] for lim in limits] == [None, 30]
    assert limits[0]["capacity"] == 1000 and limits[0]["tokens"] > 5000


async def test_a_tier_budget_no_request_of_that_size_fits_is_said_alike(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = build(tmp_path, clock, TIERED)
    async with client(app) as http:
        over_tier = await post(http, 500)  # fits the route's 1,000, not the tier's 100
    await app.shutdown()
    assert over_tier.status_code == 429 and "retry-after" not in over_tier.headers
    assert over_tier.headers["x-should-retry"] == "false"
    body = over_tier.json()
    assert body["retry_after"] is None and "at most 100," in body["detail"]
    assert over_tier.headers["x-ratelimit-remaining-tokens"] == "100"
    assert over_tier.headers["x-ratelimit-reset-tokens"] == "0ms"
