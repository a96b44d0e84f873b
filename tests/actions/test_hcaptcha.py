"""hCaptcha through the verify endpoint, against a local server speaking siteverify's form
protocol on loopback (the widget cannot load offline: the test posts a token the way it would)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from guardrail import Guardrail, Policy
from guardrail.client import solve_pow
from test_middleware_risk import HEADERS, chat, policy, warm_up

from .test_browser import serving
from conftest import FakeClock
from helpers import audit_records, build, client, echo_app
from redis_servers import free_port

SECRET = "0x4AAAAtest-secret-never-logged"
SITEKEY = "20000000-ffff-ffff-ffff-000000000002"
VERIFY = "/.guardrail/verify"
#: hCaptcha's published test keys and the dummy token its widget returns for them
TEST_SITEKEY = "10000000-ffff-ffff-ffff-000000000001"
TEST_SECRET = "0x0000000000000000000000000000000000000000"
DUMMY_TOKEN = "10000000-aaaa-bbbb-cccc-000000000001"


class Siteverify:
    """What hCaptcha's siteverify answers, by token; it keeps every form it was sent."""

    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []

    async def endpoint(self, request: Request) -> JSONResponse:
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        form = dict(parse_qsl((await request.body()).decode()))
        self.forms.append(form)
        token = form.get("response")
        if token == "slow":
            await asyncio.sleep(1)  # beyond the policy's timeout (300 ms): the client gives up
        if token == "pass":
            return JSONResponse({"success": True, "hostname": "testserver", "challenge_ts": "x"})
        if token == DUMMY_TOKEN and form.get("sitekey") == TEST_SITEKEY:
            return JSONResponse({"success": True, "hostname": "dummy-key-pass"})
        if token == "elsewhere":
            return JSONResponse({"success": True, "hostname": "evil.example"})
        if token == "garbage":
            return JSONResponse(["not", "the", "protocol"], status_code=500)
        return JSONResponse({"success": False, "error-codes": ["invalid-input-response"]})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/siteverify", self.endpoint, methods=["POST"])])


@pytest.fixture
async def siteverify() -> AsyncIterator[tuple[Siteverify, str]]:
    server = Siteverify()
    async with serving(server.app()) as base:
        yield server, f"{base}/siteverify"


def hcaptcha_policy(
    verify_url: str, on_error: str = "pow", sitekey: str = SITEKEY, hostnames: str = ""
) -> str:
    hostnames = f"    hostnames: {hostnames}\n" if hostnames else ""
    return policy(
        4.0,
        extra=f"""challenges:
  order: [hcaptcha, pow]
  hcaptcha:
    sitekey: {sitekey}
    secret: env:HCAPTCHA_TEST_SECRET
    verify_url: {verify_url}
    timeout: 300ms
    on_error: {on_error}
{hostnames}  pow: {{difficulty: 8}}
""",
    )


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HCAPTCHA_TEST_SECRET", SECRET)


async def answer(
    tmp_path: Path, clock: FakeClock, text: str, token: str, **extra: Any
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Challenge an account, answer with ``token``; (status, body, challenge 403 body)."""
    app = build(tmp_path, clock, text)
    async with client(app) as http:
        await warm_up(http, clock)
        challenged = await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
        body = challenged.json()
        form = {"challenge_id": body["challenge"]["id"], "h-captcha-response": token, **extra}
        verified = await http.post(VERIFY, json=form, headers=HEADERS)
    await app.shutdown()
    return verified.status_code, verified.json(), body


async def test_a_passing_token_earns_a_clearance(
    tmp_path: Path, clock: FakeClock, siteverify: tuple[Siteverify, str], caplog: Any
) -> None:
    server, url = siteverify
    caplog.set_level(logging.DEBUG)
    status, body, challenge = await answer(tmp_path, clock, hcaptcha_policy(url), "pass")
    assert status == 200 and "clearance" in body
    assert challenge["challenge"]["kinds"] == ["hcaptcha", "pow"]
    assert server.forms == [
        {"secret": SECRET, "response": "pass", "remoteip": "203.0.113.7", "sitekey": SITEKEY}
    ]
    assert SECRET not in caplog.text
    assert SECRET not in (tmp_path / "audit.jsonl").read_text()


@pytest.mark.parametrize(
    ("token", "reason"),
    [("wrong", "invalid-input-response"), ("elsewhere", "'evil.example' is not 'testserver'")],
)
async def test_a_refused_token_is_a_failed_challenge(
    tmp_path: Path, clock: FakeClock, siteverify: tuple[Siteverify, str], token: str, reason: str
) -> None:
    _, url = siteverify
    status, body, _ = await answer(tmp_path, clock, hcaptcha_policy(url), token)
    assert status == 403 and body["error"]["code"] == "challenge_failed"
    assert reason in body["detail"]


async def test_siteverify_down_falls_back_as_on_error_says(
    tmp_path: Path, clock: FakeClock, siteverify: tuple[Siteverify, str]
) -> None:
    _, url = siteverify
    unreachable = f"http://127.0.0.1:{free_port()}/siteverify"
    # The provider's outage is no failure of the client's: 503, nothing spent or counted.
    # pow: told to answer the same challenge with a proof of work
    status, body, _ = await answer(tmp_path, clock, hcaptcha_policy(url, "pow"), "slow")
    assert status == 503 and "timed out" in body["detail"] and "proof of work" in body["detail"]
    status, body, _ = await answer(tmp_path / "b", clock, hcaptcha_policy(unreachable), "x")
    assert status == 503 and "proof of work" in body["detail"]
    # open: passes; closed: refused for now
    status, body, _ = await answer(tmp_path / "c", clock, hcaptcha_policy(unreachable, "open"), "x")
    assert status == 200 and "clearance" in body
    status, body, _ = await answer(tmp_path / "d", clock, hcaptcha_policy(url, "closed"), "garbage")
    assert status == 503 and "not its protocol" in body["detail"]
    assert body["error"]["code"] == "service_unavailable"
    for trail in (tmp_path, tmp_path / "b", tmp_path / "d"):
        assert not [r for r in audit_records(trail) if r["action"] == "challenge_failed"]


@pytest.fixture(autouse=True)
def _dirs(tmp_path: Path) -> None:
    for name in "bcd":
        (tmp_path / name).mkdir()


async def test_the_page_offers_the_widget_and_the_form_passes_on_the_proof_of_work(
    tmp_path: Path, clock: FakeClock, siteverify: tuple[Siteverify, str]
) -> None:
    server, url = siteverify
    app = build(tmp_path, clock, hcaptcha_policy(url))
    async with client(app) as http:
        await warm_up(http, clock)
        await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
        page = await http.get("/account", headers={**HEADERS, "accept": "text/html"})
        assert page.status_code == 403
        assert f'class="h-captcha" data-sitekey="{SITEKEY}"' in page.text
        assert "https://js.hcaptcha.com/1/api.js" in page.text
        csp = page.headers["content-security-policy"]
        assert "frame-src https://hcaptcha.com https://*.hcaptcha.com" in csp
        challenge_id = page.text.split('name="challenge_id" value="')[1].split('"')[0]
        seed = page.text.split('data-seed="')[1].split('"')[0]
        nonce = solve_pow({"pow": {"algorithm": "sha256", "difficulty": 8, "seed": seed}})
        # the form as the browser posts it: the widget's field is there, empty
        form = {"challenge_id": challenge_id, "nonce": nonce, "h-captcha-response": ""}
        verified = await http.post(VERIFY, data=form, headers=HEADERS)
        assert verified.status_code == 303
    assert server.forms == []  # nothing asked of siteverify
    await app.shutdown()


async def test_hcaptchas_published_test_keys_pass_with_the_dummy_token(
    tmp_path: Path,
    clock: FakeClock,
    siteverify: tuple[Siteverify, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, url = siteverify
    monkeypatch.setenv("HCAPTCHA_TEST_SECRET", TEST_SECRET)
    text = hcaptcha_policy(url, sitekey=TEST_SITEKEY)
    status, body, _ = await answer(tmp_path, clock, text, DUMMY_TOKEN)
    assert status == 200 and "clearance" in body  # no real host reported: not checked
    assert server.forms[0]["secret"] == TEST_SECRET


@pytest.mark.parametrize(
    ("hostnames", "token", "status", "reason"),
    [
        ("[api.example.com]", "pass", 403, "'testserver' is not 'api.example.com'"),
        ("[api.example.com, TestServer]", "pass", 200, ""),
        ("['*.example']", "elsewhere", 200, ""),  # evil.example: a subdomain of example
        ("['*.evil.example']", "elsewhere", 403, "'evil.example' is not '*.evil.example'"),
    ],
)
async def test_the_tokens_hostname_is_one_of_the_configured_hostnames(
    tmp_path: Path,
    clock: FakeClock,
    siteverify: tuple[Siteverify, str],
    hostnames: str,
    token: str,
    status: int,
    reason: str,
) -> None:
    """With hostnames set, the Host the client sends (testserver here) plays no part."""
    _, url = siteverify
    text = hcaptcha_policy(url, hostnames=hostnames)
    got, body, _ = await answer(tmp_path, clock, text, token)
    assert got == status, body
    assert reason in body.get("detail", "")


async def test_an_answer_to_no_challenge_asks_nothing_of_siteverify(
    tmp_path: Path, clock: FakeClock, siteverify: tuple[Siteverify, str]
) -> None:
    server, url = siteverify
    app = build(tmp_path, clock, hcaptcha_policy(url))
    async with client(app) as http:
        forms = [
            {"challenge_id": "never-issued", "h-captcha-response": "pass"},
            {"challenge_id": "never-issued", "h-captcha-response": "wrong"},
        ]
        statuses = [(await http.post(VERIFY, data=form)).status_code for form in forms]
    await app.shutdown()
    assert statuses == [404, 404] and server.forms == []


async def test_on_error_open_is_logged_at_startup(caplog: Any) -> None:
    """What `guardrail check` warns of is said again when the middleware starts."""
    caplog.set_level(logging.WARNING, logger="guardrail")
    text = hcaptcha_policy("https://siteverify.invalid/siteverify", on_error="open")
    app = Guardrail(echo_app(), policy=Policy.from_string(text))
    await app.shutdown()
    [warning] = [r.getMessage() for r in caplog.records if "on_error" in r.getMessage()]
    assert "challenges.hcaptcha.on_error: 'open'" in warning and "pow or closed" in warning


@pytest.mark.parametrize(
    ("peer", "status"),
    [
        ("10.0.0.1", 200),  # the policy's proxy: X-Forwarded-Host is the host the client reached
        ("203.0.113.9", 403),  # anyone else: the header is the client's own words, not believed
    ],
)
async def test_behind_a_proxy_the_host_reached_is_the_forwarded_one(
    tmp_path: Path,
    clock: FakeClock,
    siteverify: tuple[Siteverify, str],
    peer: str,
    status: int,
) -> None:
    """A proxy that sends the app its internal name in Host (nginx's default proxy_set_header
    Host $proxy_host) says the public one in X-Forwarded-Host: without hostnames in the policy,
    the token must have been solved on that one, or nobody behind the proxy ever passes."""
    _, url = siteverify
    app = build(tmp_path, clock, hcaptcha_policy(url))
    forwarded = {
        "host": "app.internal:8000",
        "x-forwarded-host": "testserver",
        "x-forwarded-for": "203.0.113.7",
    }
    async with client(app, peer=peer) as http:
        http.headers.update(forwarded)
        await warm_up(http, clock)
        challenged = await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
        form = {"challenge_id": challenged.json()["challenge"]["id"], "h-captcha-response": "pass"}
        verified = await http.post(VERIFY, json=form, headers=HEADERS)
    await app.shutdown()
    assert verified.status_code == status, verified.json()
    if status == 403:
        assert "'testserver' is not 'app.internal'" in verified.json()["detail"]
