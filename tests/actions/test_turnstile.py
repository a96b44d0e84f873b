"""Turnstile: one more provider of the same siteverify protocol, against the local server."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_middleware_risk import HEADERS, chat, policy, warm_up

from .test_hcaptcha import SECRET, VERIFY, Siteverify, siteverify
from conftest import FakeClock
from helpers import build, client

__all__ = ["siteverify"]  # the fixture, shared

SITEKEY = "0x4AAAAAAAturnstile-test"


def turnstile_policy(verify_url: str) -> str:
    return policy(
        4.0,
        extra=f"""challenges:
  order: [turnstile, pow]
  turnstile:
    sitekey: {SITEKEY}
    secret: env:TURNSTILE_TEST_SECRET
    verify_url: {verify_url}
    timeout: 300ms
  pow: {{difficulty: 8}}
""",
    )


@pytest.mark.parametrize(("token", "status"), [("pass", 200), ("wrong", 403)])
async def test_a_turnstile_token_is_checked_by_siteverify(
    tmp_path: Path,
    clock: FakeClock,
    siteverify: tuple[Siteverify, str],
    monkeypatch: pytest.MonkeyPatch,
    token: str,
    status: int,
) -> None:
    server, url = siteverify
    monkeypatch.setenv("TURNSTILE_TEST_SECRET", SECRET)
    app = build(tmp_path, clock, turnstile_policy(url))
    async with client(app) as http:
        await warm_up(http, clock)
        challenged = (await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)).json()
        assert challenged["challenge"]["kinds"] == ["turnstile", "pow"]
        page = await http.get("/account", headers={**HEADERS, "accept": "text/html"})
        answer = {"challenge_id": challenged["challenge"]["id"], "cf-turnstile-response": token}
        verified = await http.post(VERIFY, json=answer, headers=HEADERS)
    await app.shutdown()
    assert f'class="cf-turnstile" data-sitekey="{SITEKEY}"' in page.text
    assert "https://challenges.cloudflare.com/turnstile/v0/api.js" in page.text
    assert "frame-src https://challenges.cloudflare.com" in page.headers["content-security-policy"]
    assert verified.status_code == status
    assert server.forms[0]["sitekey"] == SITEKEY and server.forms[0]["response"] == token
    if status == 403:
        assert "Turnstile refused the answer" in verified.json()["detail"]
