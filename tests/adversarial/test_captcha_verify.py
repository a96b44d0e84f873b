"""Issue 11, finding 9: the CAPTCHA answer at the verify endpoint.

Two attacks, against a local siteverify that speaks hCaptcha's form protocol and counts the
calls it gets:
- anonymous POSTs naming made-up challenge ids with any token: on 0.1 each one cost an
  outbound siteverify call, made before the id was looked at;
- a token solved on another site, posted with a forged ``Host`` naming that site: on 0.1 the
  token's hostname was compared with the client's own Host header, so it passed.

Fixed: the id and its principal are checked first (no call for an id that is not the
sender's), and with ``hostnames`` set the token's hostname must be one of them.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from test_middleware_risk import HEADERS, chat, policy, warm_up

from .conftest import served
from conftest import FakeClock
from helpers import build

VERIFY = "/.guardrail/verify"
SITEKEY = "20000000-ffff-ffff-ffff-000000000002"


class CountingSiteverify:
    """hCaptcha's siteverify: ``solved-for:HOST`` passes, reporting it was solved on HOST."""

    def __init__(self) -> None:
        self.calls = 0

    async def endpoint(self, request: Request) -> JSONResponse:
        self.calls += 1
        form = dict(parse_qsl((await request.body()).decode()))
        token = form.get("response", "")
        if token.startswith("solved-for:") and form.get("sitekey") == SITEKEY:
            host = token.removeprefix("solved-for:")
            return JSONResponse({"success": True, "hostname": host, "challenge_ts": "x"})
        return JSONResponse({"success": False, "error-codes": ["invalid-input-response"]})


@pytest.fixture
async def siteverify() -> AsyncIterator[tuple[CountingSiteverify, str]]:
    fake = CountingSiteverify()
    app = Starlette(routes=[Route("/siteverify", fake.endpoint, methods=["POST"])])
    async with served(app) as base:
        yield fake, f"{base}/siteverify"


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HCAPTCHA_TEST_SECRET", "0x4AAAA-adversarial-secret")


def hcaptcha_policy(url: str, hostnames: str = "") -> str:
    return policy(
        4.0,
        extra=f"""challenges:
  order: [hcaptcha, pow]
  hcaptcha:
    sitekey: {SITEKEY}
    secret: env:HCAPTCHA_TEST_SECRET
    verify_url: {url}
    timeout: 2s
{hostnames}  pow: {{difficulty: 8}}
""",
    )


async def challenge_id(http: httpx.AsyncClient, clock: FakeClock) -> str:
    """Bring the client into the challenge band; the id of the challenge it is issued."""
    await warm_up(http, clock)
    response = await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
    assert response.status_code == 403, response.text
    issued: str = response.json()["challenge"]["id"]
    return issued


async def test_an_unknown_challenge_costs_no_siteverify_call(
    tmp_path: Path, clock: FakeClock, siteverify: tuple[CountingSiteverify, str]
) -> None:
    fake, url = siteverify
    app = build(tmp_path, clock, hcaptcha_policy(url))
    anonymous = 8
    async with served(app) as base, httpx.AsyncClient(base_url=base) as http:
        answers = []
        for _ in range(anonymous):
            form = {"challenge_id": secrets.token_urlsafe(18), "h-captcha-response": "x" * 40}
            answers.append((await http.post(VERIFY, data=form)).status_code)
        calls_for_unknown = fake.calls
        # the client's own challenge is still asked of siteverify: once
        own = await challenge_id(http, clock)
        host = httpx.URL(base).host
        answer = {"challenge_id": own, "h-captcha-response": f"solved-for:{host}"}
        passed = await http.post(VERIFY, json=answer, headers=HEADERS)
    # the figure: outbound siteverify calls for anonymous POSTs; on 0.1, one per POST
    figure = f"{anonymous} anonymous POSTs ({answers}) made {calls_for_unknown} siteverify calls"
    assert calls_for_unknown == 0, figure
    assert answers == [404] * anonymous, figure
    assert passed.status_code == 200 and "clearance" in passed.json(), passed.text
    assert fake.calls == 1


async def test_a_token_solved_for_another_host_is_refused_whatever_the_host_header(
    tmp_path: Path, clock: FakeClock, siteverify: tuple[CountingSiteverify, str]
) -> None:
    fake, url = siteverify
    configured = "    hostnames: [api.example.com]\n"
    app = build(tmp_path, clock, hcaptcha_policy(url, configured))
    forged = {**HEADERS, "host": "evil.example"}
    async with served(app) as base, httpx.AsyncClient(base_url=base) as http:
        own = await challenge_id(http, clock)
        stolen = {"challenge_id": own, "h-captcha-response": "solved-for:evil.example"}
        refused = await http.post(VERIFY, json=stolen, headers=forged)
        body: dict[str, Any] = refused.json()
        # the figure: the verdict on a token solved on evil.example sent with Host:
        # evil.example; on 0.1 (without the hostnames key, which it did not know) a clearance
        figure = f"stolen token answered {refused.status_code}: {body}"
        assert refused.status_code == 403, figure
        assert body["error"]["code"] == "challenge_failed", figure
        assert "evil.example" in body["detail"], figure
        # a token solved on the configured host passes, whatever Host the client sends
        clock.advance(60)
        again = await http.post("/v1/chat/completions", json=chat(10), headers=HEADERS)
        fresh = again.json()["challenge"]["id"]
        good = {"challenge_id": fresh, "h-captcha-response": "solved-for:API.example.com"}
        passed = await http.post(VERIFY, json=good, headers=forged)
    assert passed.status_code == 200 and "clearance" in passed.json(), passed.text
    assert fake.calls == 2
