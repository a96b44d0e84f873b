"""Passing a challenge through the middleware: the verify endpoint, clearances, and every way a
clearance or an answer is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from guardrail.actions import pow
from guardrail.client import solve_pow
from guardrail.errors import ClearanceError
from test_middleware_risk import HEADERS, chat, policy, warm_up

from conftest import FakeClock
from helpers import audit_records, build, client

CHALLENGES = """challenges:
  pow: {difficulty: 8}
  clearance: {ttl: 10m, max_requests: 3}
"""
VERIFY = "/.guardrail/verify"


async def challenged(http: httpx.AsyncClient, clock: FakeClock) -> dict[str, Any]:
    """Warm an account up into the challenge band; the 403 body of its next request."""
    await warm_up(http, clock)
    response = await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
    assert response.status_code == 403 and response.headers["guardrail-action"] == "challenge"
    body: dict[str, Any] = response.json()
    return body


def answer(body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"challenge_id": body["challenge"]["id"], "nonce": solve_pow(body), **extra}


async def test_an_api_client_solves_the_pow_and_retries_with_its_clearance(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = build(tmp_path, clock, policy(4.0, extra=CHALLENGES))
    async with client(app) as http:
        body = await challenged(http, clock)
        verified = await http.post(VERIFY, json=answer(body), headers=HEADERS)
        assert verified.status_code == 200, verified.text
        grant = verified.json()
        assert grant["max_requests"] == 3 and grant["expires_at"].endswith("Z")
        cleared = {**HEADERS, "guardrail-clearance": grant["clearance"]}
        retry = await http.post("/v1/chat/completions", json=chat(10), headers=cleared)
        assert retry.status_code == 200
    await app.shutdown()
    actions = [r["action"] for r in audit_records(tmp_path)]
    assert "challenge" in actions and "challenge_passed" in actions


async def test_a_browser_gets_a_cookie_and_a_relative_redirect(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = build(tmp_path, clock, policy(4.0, extra=CHALLENGES))
    page = {**HEADERS, "accept": "text/html"}
    async with client(app) as http:
        body = await challenged(http, clock)
        assert (await http.get("/account", headers=page)).status_code == 403
        form = answer(body, redirect="/account?tab=keys")
        verified = await http.post(VERIFY, data=form, headers=HEADERS)
        assert verified.status_code == 303
        assert verified.headers["location"] == "/account?tab=keys"
        cookie = verified.headers["set-cookie"]
        assert cookie.startswith("guardrail_clearance=") and "HttpOnly" in cookie
        assert "SameSite=Lax" in cookie and "Path=/" in cookie
        again = await http.get("/account", headers=page)  # httpx sends the cookie back
        assert again.status_code == 200
    await app.shutdown()


@pytest.mark.parametrize(
    "redirect", ["https://evil.example/", "//evil.example/path", "/\\evil.example", "javascript:x"]
)
async def test_a_redirect_off_the_site_is_refused(
    tmp_path: Path, clock: FakeClock, redirect: str
) -> None:
    app = build(tmp_path, clock, policy(4.0, extra=CHALLENGES))
    async with client(app) as http:
        body = await challenged(http, clock)
        verified = await http.post(VERIFY, data=answer(body, redirect=redirect), headers=HEADERS)
    assert verified.status_code == 400
    assert "relative path" in verified.json()["detail"]
    await app.shutdown()


async def test_a_wrong_nonce_and_a_reused_challenge_are_refused_and_recorded(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = build(tmp_path, clock, policy(4.0, extra=CHALLENGES))
    async with client(app) as http:
        body = await challenged(http, clock)
        right = answer(body)
        seed = body["challenge"]["pow"]["seed"]
        wrong = next(str(n) for n in range(10**6) if not pow.verify(seed, str(n), 8))
        first = await http.post(VERIFY, json={**right, "nonce": wrong}, headers=HEADERS)
        assert first.status_code == 403 and "wrong nonce" in first.json()["detail"]
        # the id was spent on the wrong answer: the right one no longer passes
        second = await http.post(VERIFY, json=right, headers=HEADERS)
        assert second.status_code == 403 and "already answered" in second.json()["detail"]
    await app.shutdown()
    failed = [r for r in audit_records(tmp_path) if r["action"] == "challenge_failed"]
    assert len(failed) == 2 and all(r["status"] == 403 for r in failed)


async def test_refused_clearances_forged_expired_moved_used_up(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = build(tmp_path, clock, policy(4.0, extra=CHALLENGES))
    async with client(app) as http:
        body = await challenged(http, clock)
        grant = (await http.post(VERIFY, json=answer(body), headers=HEADERS)).json()
        token = grant["clearance"]

        async def status(clearance: str, http: httpx.AsyncClient = http, **headers: str) -> int:
            sent = {**HEADERS, **headers, "guardrail-clearance": clearance}
            response = await http.post("/v1/chat/completions", json=chat(11), headers=sent)
            return response.status_code

        forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
        assert await status(forged) == 403
        assert await status(token, **{"user-agent": "another-client/1.0"}) == 403
        async with client(app, peer="192.0.2.50") as elsewhere:  # another subnet
            assert await status(token, http=elsewhere) == 403
        assert [await status(token) for _ in range(4)] == [200, 200, 200, 403]  # max 3
        again = await http.post("/v1/chat/completions", json=chat(13), headers=HEADERS)
        assert again.status_code == 403  # still in the challenge band: a new challenge
        other = answer(again.json())
        fresh = (await http.post(VERIFY, json=other, headers=HEADERS)).json()["clearance"]
        assert await status(fresh) == 200
        clock.advance(601)  # ttl 10m
        assert await status(fresh) == 403
    await app.shutdown()


async def test_a_challenge_issued_by_one_instance_is_verified_by_another(
    tmp_path: Path, clock: FakeClock, redis_url: str
) -> None:
    text = policy(4.0, extra=CHALLENGES)
    (tmp_path / "second").mkdir()
    first = build(tmp_path, clock, text, storage=redis_url)
    second = build(tmp_path / "second", clock, text, storage=redis_url)
    async with client(first) as one, client(second) as two:
        body = await challenged(one, clock)
        verified = await two.post(VERIFY, json=answer(body), headers=HEADERS)
        assert verified.status_code == 200
        cleared = {**HEADERS, "guardrail-clearance": verified.json()["clearance"]}
        retry = await one.post("/v1/chat/completions", json=chat(12), headers=cleared)
        assert retry.status_code == 200
    await first.shutdown()
    await second.shutdown()


async def test_clearance_secrets_rotate(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clearance signed before a rotation (the old secret alone) still passes after it (the
    new secret first, the old one still listed); one signed with a dropped secret does not."""
    monkeypatch.setenv("CLEARANCE_NEW", "new-secret")
    monkeypatch.setenv("CLEARANCE_OLD", "old-secret")

    def app(secrets: str) -> Any:
        signing = f"max_requests: 3, secrets: {secrets}}}"
        return build(
            tmp_path, clock, policy(4.0, extra=CHALLENGES.replace("max_requests: 3}", signing))
        )

    before = app("[env:CLEARANCE_OLD]")
    during = app("[env:CLEARANCE_NEW, env:CLEARANCE_OLD]")
    after = app("[env:CLEARANCE_NEW]")
    peer = {"type": "http", "headers": [], "client": ("203.0.113.7", 1)}
    subject = before.identity.resolve(peer)
    token, claims = before.clearances.issue(subject, {"headers": []}, clock())
    assert during.clearances.verify(token, subject, {"headers": []}, clock()) == claims
    with pytest.raises(ClearanceError):
        after.clearances.verify(token, subject, {"headers": []}, clock())
