"""The challenge page and the 403 body: the site named and escaped, the manual form only without
JavaScript, and the verify endpoint's absolute URL as the client reached it (through trusted
proxies only)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from guardrail.origin import origin_of
from test_middleware_risk import HEADERS, chat, policy, warm_up

from .test_verify import CHALLENGES
from conftest import FakeClock
from helpers import build, client

PAGE = "/.guardrail/challenge/abcdefgh"


async def test_the_page_names_the_host_and_says_why(tmp_path: Path, clock: FakeClock) -> None:
    app = build(tmp_path, clock, policy(4.0, extra=CHALLENGES))
    async with client(app) as http:
        page = await http.get(PAGE, headers={"host": "models.example.com:8443"})
    await app.shutdown()
    assert page.status_code == 200
    assert "<title>Checking your connection to models.example.com</title>" in page.text
    assert "models.example.com saw unusual traffic from your network" in page.text
    # The proof of work runs with its progress; the manual form is for browsers without scripts
    js_part, noscript = page.text.split("<noscript>")
    assert '<div id="guardrail-progress" hidden>' in js_part
    assert 'name="nonce" value=""' in js_part and "guardrail-nonce" not in js_part
    assert 'id="guardrail-nonce" name="nonce"' in noscript
    assert "python3 -c" in noscript and "starts\nwith 8 zero bits" in noscript
    # No inline script: the page keeps its CSP
    assert "default-src 'none'; script-src 'self';" in page.headers["content-security-policy"]
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/.guardrail/pow.js">']


async def test_the_policy_names_the_site_escaped(tmp_path: Path, clock: FakeClock) -> None:
    extra = CHALLENGES + '  site_name: "Models <b>& co</b>"\n'
    app = build(tmp_path, clock, policy(4.0, extra=extra))
    async with client(app) as http:
        page = await http.get(PAGE)
        unnamed = build(tmp_path, clock, policy(4.0, extra=CHALLENGES))
        async with client(unnamed) as other:
            bad_host = await other.get(PAGE, headers={"host": "<script>x</script>"})
    await app.shutdown()
    await unnamed.shutdown()
    assert "Checking your connection to Models &lt;b&gt;&amp; co&lt;/b&gt;" in page.text
    assert "<b>" not in page.text
    # A Host that is not a host names no site
    assert "<title>Checking your connection</title>" in bad_host.text
    assert "This site saw unusual traffic" in bad_host.text
    assert "<script>x" not in bad_host.text


async def test_the_403_names_the_absolute_verify_url(tmp_path: Path, clock: FakeClock) -> None:
    app = build(tmp_path, clock, policy(4.0, extra=CHALLENGES))
    async with client(app) as http:
        await warm_up(http, clock)
        refused = await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
    await app.shutdown()
    challenge = refused.json()["challenge"]
    assert challenge["verify_url"] == "http://testserver/.guardrail/verify"
    assert challenge["url"] == f"/.guardrail/challenge/{challenge['id']}"  # as the SPEC says
    assert "POST it to http://testserver/.guardrail/verify" in refused.json()["detail"]


PROXY = [
    (b"host", b"10.0.0.5:8000"),
    (b"x-forwarded-proto", b"https"),
    (b"x-forwarded-host", b"api.example.com"),
    (b"forwarded", b'for=203.0.113.7;proto=https;host="api.example.org:8443"'),
]


@pytest.mark.parametrize(
    ("peer", "header", "headers", "expected"),
    [
        # a trusted proxy says what the client reached, in the header family the policy reads
        ("10.0.0.1", "x-forwarded-for", PROXY, "https://api.example.com"),
        ("10.0.0.1", "forwarded", PROXY, "https://api.example.org:8443"),
        # anyone else's forwarding headers are not believed
        ("203.0.113.9", "x-forwarded-for", PROXY, "http://10.0.0.5:8000"),
        # a proxy that appends: the last value is the nearest proxy's
        (
            "10.0.0.1",
            "x-forwarded-for",
            [(b"x-forwarded-proto", b"http, https"), (b"host", b"h.example")],
            "https://h.example",
        ),
        # no Host: the server's address, without the scheme's default port
        ("203.0.113.9", "x-forwarded-for", [], "http://127.0.0.1"),
        ("203.0.113.9", "x-forwarded-for", [(b"host", b"[2001:db8::1]:8080")], None),
    ],
)
def test_the_origin_behind_trusted_proxies(
    peer: str, header: str, headers: list[tuple[bytes, bytes]], expected: str | None
) -> None:
    scope = {"type": "http", "scheme": "http", "headers": headers, "server": ("127.0.0.1", 80)}
    origin = origin_of(scope, proxied=peer == "10.0.0.1", header=header)
    if expected is None:
        assert origin is not None and origin.hostname == "[2001:db8::1]"
        assert origin.url("/x") == "http://[2001:db8::1]:8080/x"
    else:
        assert origin is not None and origin.url("") == expected


async def test_the_verify_url_through_a_trusted_proxy(tmp_path: Path, clock: FakeClock) -> None:
    app = build(tmp_path, clock, policy(4.0, extra=CHALLENGES))
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 40000))  # the proxy
    forwarded = {
        **HEADERS,
        "x-forwarded-for": "203.0.113.7",
        "x-forwarded-proto": "https",
        "x-forwarded-host": "api.example.com",
    }
    async with httpx.AsyncClient(transport=transport, base_url="http://internal:8000") as http:
        for i in range(3):
            assert (
                await http.post("/v1/chat/completions", json=chat(i), headers=forwarded)
            ).is_success
            clock.advance(30)
        refused = await http.post("/v1/chat/completions", json=chat(9), headers=forwarded)
        page = await http.get(PAGE, headers=forwarded)
    await app.shutdown()
    assert refused.json()["challenge"]["verify_url"] == "https://api.example.com/.guardrail/verify"
    assert "Checking your connection to api.example.com" in page.text
