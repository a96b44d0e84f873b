"""Passing a challenge through the middleware: the verify endpoint, clearances, and every way a
clearance or an answer is refused."""

from __future__ import annotations

import random
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
from redis_servers import free_port

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
    ("peer", "secure"),
    [
        ("10.0.0.1", True),  # the policy's proxy terminated TLS: X-Forwarded-Proto is https
        ("203.0.113.9", False),  # anyone else saying so is not believed: the scope's http
    ],
)
async def test_behind_a_tls_proxy_the_cookie_is_secure_and_host_only(
    tmp_path: Path, clock: FakeClock, peer: str, secure: bool
) -> None:
    """A proxy that terminates TLS speaks http to the app: the cookie of a site its clients
    reach over https must still be Secure (and __Host-: no subdomain or plain-http page can set
    or read it), as the client's scheme, not the proxy's, says."""
    app = build(tmp_path, clock, policy(4.0, extra=CHALLENGES))
    async with client(app, peer=peer) as http:
        http.headers.update({"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.7"})
        body = await challenged(http, clock)
        verified = await http.post(VERIFY, data=answer(body), headers=HEADERS)
        assert verified.status_code == 303
        cookie = verified.headers["set-cookie"]
    await app.shutdown()
    assert cookie.startswith("__Host-guardrail_clearance=") is secure
    assert ("; Secure" in cookie) is secure


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


async def test_a_wrong_nonce_fails_without_burning_the_challenge_and_a_reuse_is_refused(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A wrong nonce is a failure of its principal, but checked before the challenge is taken:
    a client sharing the principal (a NAT, an IPv6 /64) cannot burn it for the others."""
    app = build(tmp_path, clock, policy(4.0, extra=CHALLENGES))
    async with client(app) as http:
        body = await challenged(http, clock)
        right = answer(body)
        seed = body["challenge"]["pow"]["seed"]
        wrong = next(str(n) for n in range(10**6) if not pow.verify(seed, str(n), 8))
        first = await http.post(VERIFY, json={**right, "nonce": wrong}, headers=HEADERS)
        assert first.status_code == 403 and "wrong nonce" in first.json()["detail"]
        # not spent: the right answer still passes, once
        assert (await http.post(VERIFY, json=right, headers=HEADERS)).status_code == 200
        again = await http.post(VERIFY, json=right, headers=HEADERS)
        assert again.status_code == 404 and "already answered" in again.json()["detail"]
        assert again.json()["error"]["code"] == "challenge_not_found"
    await app.shutdown()
    actions = [r["action"] for r in audit_records(tmp_path)]
    assert actions.count("challenge_failed") == 1 and actions.count("challenge_passed") == 1


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


async def test_another_principal_cannot_answer_or_spend_a_challenge(
    tmp_path: Path, clock: FakeClock
) -> None:
    """An id issued to one principal is, to every other, no challenge at all: not answered,
    not spent, no failure recorded; its own principal still answers it."""
    app = build(tmp_path, clock, policy(4.0, extra=CHALLENGES))
    async with client(app) as http:
        body = await challenged(http, clock)
        other = {**HEADERS, "authorization": "Bearer sk-other"}
        taken = await http.post(VERIFY, json=answer(body), headers=other)
        assert taken.status_code == 404, taken.text
        assert taken.json()["error"]["code"] == "challenge_not_found"
        mine = await http.post(VERIFY, json=answer(body), headers=HEADERS)
        assert mine.status_code == 200, mine.text
    await app.shutdown()
    actions = [r["action"] for r in audit_records(tmp_path)]
    assert "challenge_failed" not in actions and actions.count("challenge_passed") == 1


async def test_answers_to_no_challenge_count_against_no_one(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = build(tmp_path, clock, policy(4.0, extra=CHALLENGES))
    made_up = {"challenge_id": "never-issued-0123456789", "nonce": "1"}
    async with client(app) as http:
        statuses = [
            (await http.post(VERIFY, data=made_up, headers=HEADERS)).status_code for _ in range(6)
        ]
        served = await http.post("/v1/chat/completions", json=chat(1), headers=HEADERS)
    await app.shutdown()
    assert statuses == [404] * 6
    assert served.status_code == 200  # six "failures" on 0.1 were the block band
    assert not [r for r in audit_records(tmp_path) if r["action"] == "challenge_failed"]


@pytest.mark.parametrize(
    "challenge_id", ["", "../../etc", "x" * 65, "a b", 12345, None, "caf\u00e9"]
)
async def test_a_malformed_challenge_id_is_a_bad_request(
    tmp_path: Path, clock: FakeClock, challenge_id: object
) -> None:
    app = build(tmp_path, clock, policy(4.0, extra=CHALLENGES))
    async with client(app) as http:
        response = await http.post(
            VERIFY, json={"challenge_id": challenge_id, "nonce": "1"}, headers=HEADERS
        )
    await app.shutdown()
    assert response.status_code == 400 and "challenge_id" in response.json()["detail"]


async def test_the_verify_endpoint_has_its_own_limits(tmp_path: Path, clock: FakeClock) -> None:
    limited = CHALLENGES + "  verify_limits: [{per: ip, rate: 2/minute}]\n"
    app = build(tmp_path, clock, policy(4.0, extra=limited))
    made_up = {"challenge_id": "never-issued", "nonce": "1"}
    async with client(app) as http, client(app, peer="192.0.2.9") as neighbour:
        first = [(await http.post(VERIFY, json=made_up)).status_code for _ in range(3)]
        elsewhere = await neighbour.post(VERIFY, json=made_up)
        refused = await http.post(VERIFY, content=b"not even an answer")
        clock.advance(30)  # one answer's worth at 2/minute
        again = await http.post(VERIFY, json=made_up)
    await app.shutdown()
    assert first == [404, 404, 429] and elsewhere.status_code == 404
    assert refused.status_code == 429  # charged before the body is read
    assert refused.headers["retry-after"] == "30"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert again.status_code == 404
    [record, *_] = [r for r in audit_records(tmp_path) if r["action"] == "limit"]
    assert record["status"] == 429 and record["limit"]["per"] == "ip"
    assert record["route"] == "challenge"


async def test_verify_limits_can_be_turned_off(tmp_path: Path, clock: FakeClock) -> None:
    app = build(tmp_path, clock, policy(4.0, extra=CHALLENGES + "  verify_limits: []\n"))
    made_up = {"challenge_id": "never-issued", "nonce": "1"}
    async with client(app) as http:
        statuses = {(await http.post(VERIFY, json=made_up)).status_code for _ in range(30)}
    await app.shutdown()
    assert statuses == {404}


@pytest.mark.parametrize(
    ("on_error", "statuses"), [("fail_closed", [503, 503]), ("fail_open", [503, 429])]
)
async def test_verify_limits_follow_on_storage_error(
    tmp_path: Path, clock: FakeClock, on_error: str, statuses: list[int]
) -> None:
    """Redis down: fail_closed refuses (503); fail_open limits with the local fallback, and
    the answer itself still needs the challenge store (503 until it is back)."""
    limited = CHALLENGES + "  verify_limits: [{per: ip, rate: 1/minute}]\n"
    text = policy(4.0, extra=limited).replace(
        "version: 1", f"version: 1\non_storage_error: {on_error}"
    )
    dead = f"redis://127.0.0.1:{free_port()}/0?timeout=0.2"
    app = build(tmp_path, clock, text, storage=dead)
    made_up = {"challenge_id": "never-issued", "nonce": "1"}
    async with client(app) as http:
        answered = [(await http.post(VERIFY, json=made_up)).status_code for _ in range(2)]
    await app.shutdown()
    assert answered == statuses


async def test_a_challenged_client_is_shown_its_live_challenge_until_it_answers(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = build(tmp_path, clock, policy(4.0, extra=CHALLENGES))
    async with client(app) as http:
        body = await challenged(http, clock)
        again = await http.post("/v1/chat/completions", json=chat(10), headers=HEADERS)
        assert again.json()["challenge"] == body["challenge"]  # id, seed and expiry
        page = await http.get("/account", headers={**HEADERS, "accept": "text/html"})
        assert body["challenge"]["id"] in page.text
        assert (await http.post(VERIFY, json=answer(body), headers=HEADERS)).status_code == 200
        clock.advance(601)  # the clearance (ttl 10m) is gone: a new challenge
        after = await http.post("/v1/chat/completions", json=chat(11), headers=HEADERS)
        assert after.json()["challenge"]["id"] != body["challenge"]["id"]
    await app.shutdown()


async def test_instances_sharing_redis_share_the_verify_limits(
    tmp_path: Path, clock: FakeClock, redis_url: str
) -> None:
    text = policy(4.0, extra=CHALLENGES + "  verify_limits: [{per: ip, rate: 3/minute}]\n")
    (tmp_path / "second").mkdir()
    first = build(tmp_path, clock, text, storage=redis_url)
    second = build(tmp_path / "second", clock, text, storage=redis_url)
    made_up = {"challenge_id": "never-issued", "nonce": "1"}
    async with client(first) as one, client(second) as two:
        statuses = [(await http.post(VERIFY, json=made_up)).status_code for http in (one, two) * 2]
    await first.shutdown()
    await second.shutdown()
    assert statuses == [404, 404, 404, 429]


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/x-www-form-urlencoded", "text/plain", ""]
)
async def test_whatever_is_posted_the_answer_is_a_4xx(
    tmp_path: Path, clock: FakeClock, content_type: str
) -> None:
    app = build(tmp_path, clock, policy(4.0, extra=CHALLENGES + "  verify_limits: []\n"))
    rng = random.Random(11)
    bodies = [
        b"",
        b"\xff\xfe\x00",
        b"[" * 5000,
        b'{"challenge_id": ["x"], "nonce": 1}',
        b'{"challenge_id": "abc", "nonce": {"a": 1}, "h-captcha-response": 5}',
        b'{"challenge_id": "abc", "nonce": true, "redirect": 7}',
        b"challenge_id=abc&nonce=1&redirect=%2F%2Fevil&" + b"&".join([b"a=1"] * 20),
        b"challenge_id=%ff%fe&nonce=1",
        b"x" * 9000,
        *(rng.randbytes(rng.randrange(1, 300)) for _ in range(40)),
    ]
    async with client(app) as http:
        statuses = [
            (
                await http.post(VERIFY, content=body, headers={"content-type": content_type})
            ).status_code
            for body in bodies
        ]
    await app.shutdown()
    assert all(400 <= status < 500 for status in statuses), statuses
