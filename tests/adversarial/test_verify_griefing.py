"""Issue 11, finding 5: griefing through the verify endpoint.

The attack: ``POST {prefix}/verify`` with a challenge id that was never issued, sent as the
victim (an account named by the header a trusted proxy forwards; a keyless IP by a cross-site
form that the victim's browser submits). On 0.1 each POST recorded a failed challenge against
the victim, and five put it in the block band. And the endpoint had no limit of its own.

Fixed: an id that is unknown (or not the sender's) is answered 404 and counted against no one;
the endpoint has its own per-ip and per-subnet limits, 429 beyond them.
"""

from __future__ import annotations

import secrets
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import served
from conftest import FakeClock
from helpers import build, echo_app

VERIFY = "/.guardrail/verify"
PROXY = "127.0.0.1"  # uvicorn's peer: the trusted proxy in front of the app
ATTACKER_IP = "203.0.113.66"

POLICY = f"""
version: 1
secret: env:GUARDRAIL_TEST_SECRET
identity:
  api_key: {{header: authorization}}
  account: {{header: x-account-id}}
  client_ip: {{trusted_proxies: [{PROXY}]}}
routes:
  - name: default
    match: {{path: /}}
    limits:
      - {{per: ip, rate: 600/minute, burst: 100}}
thresholds:
  - {{score: 75, action: challenge}}
  - {{score: 95, action: block}}
challenges:
  pow: {{difficulty: 8}}
"""


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> str:
    return "memory://" if request.param == "memory" else str(request.getfixturevalue("redis_url"))


async def standing(http: httpx.AsyncClient, headers: dict[str, str]) -> tuple[int, str, Any]:
    """What the victim gets for an ordinary request: (status, action, score)."""
    response = await http.get("/account", headers=headers)
    if response.status_code == 200:
        body = response.json()
        return 200, body["action"], body["score"]
    return response.status_code, response.headers.get("guardrail-action", ""), None


def forged_form() -> dict[str, str]:
    """What a cross-site form can post: an id it made up and any nonce."""
    return {"challenge_id": secrets.token_urlsafe(18), "nonce": "1"}


@pytest.mark.parametrize(
    "victim",
    [
        pytest.param({"x-account-id": "acct-victim", "x-forwarded-for": ATTACKER_IP}, id="account"),
        pytest.param({"x-forwarded-for": "198.51.100.23"}, id="keyless-ip"),
    ],
)
async def test_five_forged_answers_do_not_block_the_victim(
    tmp_path: Path, clock: FakeClock, storage: str, victim: dict[str, str]
) -> None:
    app = build(tmp_path, clock, POLICY, storage=storage, app=echo_app())
    async with served(app, proxy_headers=False) as base, httpx.AsyncClient(base_url=base) as http:
        before = await standing(http, victim)
        answered = [
            (await http.post(VERIFY, data=forged_form(), headers=victim)).status_code
            for _ in range(5)
        ]
        clock.advance(1)
        after = await standing(http, victim)
    # the figure: the victim's (status, action, score) before and after five forged answers;
    # on 0.1 the answers were 403 challenge_failed and the victim went from allow to block
    figure = f"victim before {before}, after {after}; forged answers {answered}"
    assert before[:2] == (200, "allow"), figure
    assert after[:2] == (200, "allow"), figure
    assert after[2] == pytest.approx(before[2], abs=5.0), figure
    assert answered == [404] * 5, figure


async def test_a_flood_of_verify_posts_is_limited(
    tmp_path: Path, clock: FakeClock, storage: str
) -> None:
    app = build(tmp_path, clock, POLICY, storage=storage, app=echo_app())
    sent = 40
    attacker = {"x-forwarded-for": ATTACKER_IP}
    async with served(app, proxy_headers=False) as base, httpx.AsyncClient(base_url=base) as http:
        statuses = Counter(
            [
                (await http.post(VERIFY, data=forged_form(), headers=attacker)).status_code
                for _ in range(sent)
            ]
        )
        # a neighbour on another network is not held back by the attacker's flood
        neighbour = {"x-forwarded-for": "192.0.2.40"}
        other = await http.post(VERIFY, data=forged_form(), headers=neighbour)
        refused = await http.post(VERIFY, data=forged_form(), headers=attacker)
    # the figure: how the flood was answered; on 0.1 every POST was a 403 and none a 429
    figure = f"{sent} verify POSTs from one ip answered {dict(statuses)}"
    assert statuses[429] >= sent - 10, figure  # beyond the default burst of 10 per ip
    assert statuses[404] <= 10, figure
    assert other.status_code == 404, other.text
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.headers["guardrail-action"] == "limit"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"


async def test_a_challenged_client_holds_one_challenge_not_one_per_request(
    tmp_path: Path, clock: FakeClock, redis_url: str
) -> None:
    """The same class from the other side: every challenged request stored a new challenge
    (unlimited: a challenge is answered before any limit is charged), so one client in the
    challenge band grew Redis without bound, and in memory pushed out everyone else's
    pending challenges. A principal now has one live challenge, shown to each request."""
    import redis.asyncio as aioredis

    from test_middleware_risk import HEADERS, chat, policy, warm_up

    app = build(tmp_path, clock, policy(4.0), storage=redis_url)
    sent = 60
    async with served(app) as base, httpx.AsyncClient(base_url=base) as http:
        await warm_up(http, clock)
        redis = aioredis.from_url(redis_url)
        before = await redis.info("memory")
        ids = set()
        for n in range(sent):
            response = await http.post("/v1/chat/completions", json=chat(9 + n), headers=HEADERS)
            assert response.status_code == 403, response.text
            ids.add(response.json()["challenge"]["id"])
        challenges = [key async for key in redis.scan_iter(match="*ch:*")]
        after = await redis.info("memory")
        await redis.aclose()
    grown = after["used_memory"] - before["used_memory"]
    # the figure: challenges stored for one client's challenged requests; on 0.1, one each
    figure = f"{sent} challenged requests: {len(challenges)} stored, {len(ids)} ids, +{grown} B"
    assert len(challenges) == 1 and len(ids) == 1, figure
