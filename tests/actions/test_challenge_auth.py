"""Clients that answer challenges by themselves: the real OpenAI SDK, async over
httpx.ASGITransport and sync over a real uvicorn, with guardrail.client's httpx clients."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from examples.openai_server import create_app
from guardrail import Guardrail, Policy, challenge_auth
from guardrail import client as client_module
from guardrail.client import ChallengeAuth, openai_async_http_client, openai_http_client
from test_middleware_risk import ASK, HEADERS, policy

from .test_browser import serving
from conftest import FakeClock

CHALLENGES = """challenges:
  pow: {difficulty: 12}
  clearance: {ttl: 10m, max_requests: 3}
"""
PEER = ("203.0.113.7", 40000)
CHAT = "/v1/chat/completions"
VERIFY = "/.guardrail/verify"


def example(tmp_path: Path, clock: FakeClock, weight: float = 4.0, extra: str = CHALLENGES) -> Any:
    return create_app(
        policy=Policy.from_string(policy(weight, extra=extra)),
        clock=clock,
        sleep=clock.sleep,
        audit=f"file://{tmp_path / 'audit.jsonl'}",
    )


class Sent:
    """The requests a client sent (the auth flow's own included): path, and its clearance."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []

    def hook(self, request: httpx.Request) -> None:
        self.requests.append((request.url.path, request.headers.get("guardrail-clearance")))

    async def ahook(self, request: httpx.Request) -> None:
        self.hook(request)

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def take(self) -> list[tuple[str, str | None]]:
        taken, self.requests = self.requests, []
        return taken


def sdk(http: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="sk-test-1",
        base_url="http://testserver/v1",
        http_client=http,
        default_headers={"x-account-id": HEADERS["x-account-id"]},
        max_retries=0,
    )


async def ask(client: openai.AsyncOpenAI, n: int) -> str | None:
    reply = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": ASK.format(n)}]
    )
    return reply.choices[0].message.content


async def test_the_async_sdk_passes_one_challenge_and_reuses_the_clearance(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = example(tmp_path, clock)
    sent = Sent()
    http = openai_async_http_client(
        auth=ChallengeAuth(clock=clock),
        transport=httpx.ASGITransport(app=app, client=PEER),
        event_hooks={"request": [sent.ahook]},
    )
    client = sdk(http)
    for n in range(3):  # into the challenge band
        assert await ask(client, n)
        clock.advance(30)
    sent.take()
    assert await ask(client, 3)  # challenged, solved, verified, sent again: one call
    (first, _), (verify, _), (retry, clearance) = sent.take()
    assert (first, verify, retry) == (CHAT, VERIFY, CHAT)
    assert clearance is not None
    for n in (4, 5):  # the next calls carry the same clearance: no challenge, no verify
        assert await ask(client, n)
        assert sent.take() == [(CHAT, clearance)]
    # max_requests: 3, all spent: the next call is challenged again and passes again
    assert await ask(client, 6)
    assert sent.paths() == [CHAT, VERIFY, CHAT] and sent.requests[0][1] is None
    await http.aclose()
    await app.shutdown()


async def test_a_refused_clearance_is_dropped_and_the_new_challenge_passed(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = example(tmp_path, clock)
    sent = Sent()
    # This client's clock is an hour behind the server's: it holds a clearance the server
    # finds expired
    auth = ChallengeAuth(clock=lambda: clock.now - 3600)
    transport = httpx.ASGITransport(app=app, client=PEER)
    http = openai_async_http_client(
        auth=auth, transport=transport, event_hooks={"request": [sent.ahook]}
    )
    client = sdk(http)
    for n in range(4):
        assert await ask(client, n)
        clock.advance(30)
    old = sent.requests[-1][1]
    assert old is not None
    sent.take()
    clock.advance(600)  # the clearance's ttl, on the server's clock
    assert await ask(client, 5)
    (_, refused), (verify, _), (_, fresh) = sent.take()
    assert refused == old and verify == VERIFY and fresh not in (None, old)
    await http.aclose()
    await app.shutdown()


async def test_a_second_challenge_after_the_retry_is_the_callers(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = example(tmp_path, clock)
    sent = Sent()

    async def proxy_that_rewrites_the_user_agent(request: httpx.Request) -> None:
        # the clearance is bound to the user agent: on the retry it no longer matches
        if "guardrail-clearance" in request.headers:
            request.headers["user-agent"] = "another-agent/1.0"

    http = openai_async_http_client(
        transport=httpx.ASGITransport(app=app, client=PEER),
        event_hooks={"request": [sent.ahook, proxy_that_rewrites_the_user_agent]},
    )
    client = sdk(http)
    for n in range(3):
        assert await ask(client, n)
        clock.advance(30)
    sent.take()
    with pytest.raises(openai.PermissionDeniedError) as raised:
        await ask(client, 3)
    assert sent.paths() == [CHAT, VERIFY, CHAT]  # once, then the 403 is the caller's
    assert raised.value.response.json()["challenge"]["kinds"] == ["pow"]
    await http.aclose()
    await app.shutdown()


def forbidding_app() -> Starlette:
    async def forbidden(request: Request) -> JSONResponse:
        body = {"error": {"message": "not your model", "type": "permission_denied"}}
        return JSONResponse(body, status_code=403, headers={"x-app": "1"})

    return Starlette(routes=[Route(CHAT, forbidden, methods=["POST"])])


async def test_other_403s_pass_through_untouched(tmp_path: Path, clock: FakeClock) -> None:
    app = Guardrail(
        forbidding_app(),
        policy=Policy.from_string(policy(4.0, extra=CHALLENGES)),
        clock=clock,
        sleep=clock.sleep,
        audit=f"file://{tmp_path / 'audit.jsonl'}",
    )
    blocking = example(tmp_path, clock, weight=5.0)  # guardrail's own block: a 403 too
    for target in (app, blocking):
        sent = Sent()
        http = openai_async_http_client(
            transport=httpx.ASGITransport(app=target, client=PEER),
            event_hooks={"request": [sent.ahook]},
        )
        client = sdk(http)
        refused = None
        for n in range(4):
            try:
                await ask(client, n)
            except openai.PermissionDeniedError as exc:
                refused = exc.response
                break
            clock.advance(30)
        assert refused is not None
        assert VERIFY not in sent.paths() and sent.paths().count(CHAT) == n + 1
        if target is app:
            assert refused.json() == {
                "error": {"message": "not your model", "type": "permission_denied"}
            }
            assert refused.headers["x-app"] == "1"
        else:
            assert refused.headers["guardrail-action"] == "block"
        await http.aclose()
        await target.shutdown()


async def test_solving_never_blocks_the_event_loop(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = example(tmp_path, clock, extra=CHALLENGES.replace("difficulty: 12", "difficulty: 17"))
    ticks = 0
    during: list[int] = []  # the loop's ticks while each slice of the solve ran
    threads: set[int] = set()
    search: Callable[..., str | None] = challenge_auth.search

    def watched(*args: Any) -> str | None:
        threads.add(threading.get_ident())
        before = ticks
        try:
            # a full slice's work whatever the nonce: one found in its first thousand tries
            # (~1 % of solves) ends before the interpreter lets the loop run once
            search("never", 64, 0, challenge_auth.SLICE)
            return search(*args)
        finally:
            during.append(ticks - before)

    monkeypatch.setattr(challenge_auth, "search", watched)

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    http = openai_async_http_client(transport=httpx.ASGITransport(app=app, client=PEER))
    client = sdk(http)
    for n in range(3):
        assert await ask(client, n)
        clock.advance(30)
    ticking = asyncio.create_task(ticker())
    try:
        assert await ask(client, 3)
    finally:
        ticking.cancel()
    assert during and threading.get_ident() not in threads  # solved in worker threads
    # A solve on the loop's own thread would see no tick at all while it ran (2^17 tries
    # expected: each slice of 65,536 takes several of the interpreter's 5 ms switch intervals)
    assert sum(during) > 0, during
    await http.aclose()
    await app.shutdown()


async def test_the_sync_sdk_over_a_real_server(tmp_path: Path, clock: FakeClock) -> None:
    app = example(tmp_path, clock)
    sent = Sent()
    async with serving(app) as base:

        def run() -> list[str | None]:
            http = openai_http_client(
                auth=ChallengeAuth(clock=clock), event_hooks={"request": [sent.hook]}
            )
            client = openai.OpenAI(
                api_key="sk-test-1",
                base_url=f"{base}/v1",
                http_client=http,
                default_headers={"x-account-id": HEADERS["x-account-id"]},
                max_retries=0,
            )
            replies = []
            for n in range(5):
                reply = client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": ASK.format(n)}]
                )
                replies.append(reply.choices[0].message.content)
                clock.advance(30)
            http.close()
            return replies

        replies = await asyncio.to_thread(run)  # the server runs on this loop
    await app.shutdown()
    assert all(replies)
    assert sent.paths() == [CHAT] * 4 + [VERIFY] + [CHAT] * 2
    clearances = [c for _, c in sent.requests]
    assert clearances[:5] == [None] * 5 and clearances[5] is not None
    assert clearances[6] == clearances[5]  # reused


async def test_a_clearance_won_meanwhile_spares_a_second_solve(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = example(tmp_path, clock)
    sent = Sent()
    other_done = asyncio.Event()
    paused: list[bool] = []

    async def hold_the_first_challenge(response: httpx.Response) -> None:
        # The first call's 403 waits here until a second call has passed its own challenge
        if response.status_code == 403 and not paused:
            paused.append(True)
            await other_done.wait()

    http = openai_async_http_client(
        transport=httpx.ASGITransport(app=app, client=PEER),
        event_hooks={"request": [sent.ahook], "response": [hold_the_first_challenge]},
    )
    client = sdk(http)
    for n in range(3):
        assert await ask(client, n)
        clock.advance(30)
    sent.take()
    first = asyncio.create_task(ask(client, 3))
    while not paused:  # noqa: ASYNC110 (the hook is the only signal there is)
        await asyncio.sleep(0)
    assert await ask(client, 4)  # challenged, solved, verified, served
    other_done.set()
    assert await first  # served on the second call's clearance
    requests = sent.take()
    assert [path for path, _ in requests] == [CHAT, CHAT, VERIFY, CHAT, CHAT]
    assert requests[4][1] == requests[3][1] is not None
    await http.aclose()
    await app.shutdown()


def test_solve_pow_needs_only_the_standard_library(tmp_path: Path) -> None:
    """client.py copied alone into a program without httpx (or guardrail): solve_pow works,
    and the httpx side says what it needs."""
    copy = tmp_path / "guardrail_client.py"
    copy.write_text(Path(client_module.__file__).read_text())
    program = (
        "import sys; sys.modules['httpx'] = None; sys.modules['guardrail'] = None\n"
        "import guardrail_client as c\n"
        "body = {'challenge': {'pow': {'algorithm': 'sha256', 'difficulty': 8, 'seed': 's'}}}\n"
        "print(c.solve_pow(body))\n"
        "try:\n    c.ChallengeAuth\nexcept ImportError as exc:\n    print('ImportError')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    nonce, error = done.stdout.split()
    assert nonce == client_module.solve_pow(
        {"pow": {"algorithm": "sha256", "difficulty": 8, "seed": "s"}}
    )
    assert error == "ImportError"


@pytest.mark.parametrize(
    ("challenge", "expected"),
    [
        (
            {
                "url": "/.guardrail/challenge/x",
                "verify_url": "https://api.example.com/.guardrail/verify",
            },
            "https://api.example.com/.guardrail/verify",
        ),
        # another origin: the request's headers (its API key) are not sent there
        (
            {"url": "/llm/.guardrail/challenge/x", "verify_url": "https://evil.example/verify"},
            "https://api.example.com/llm/.guardrail/verify",
        ),
        # the same host over http is another origin too
        (
            {"url": "/.guardrail/challenge/x", "verify_url": "http://api.example.com/v"},
            "https://api.example.com/.guardrail/verify",
        ),
        ({"url": "https://evil.example/.guardrail/challenge/x"}, None),
        ({}, None),
    ],
)
def test_the_answer_goes_to_the_requests_own_origin(
    challenge: dict[str, str], expected: str | None
) -> None:
    request_url = httpx.URL("https://api.example.com/v1/chat/completions?x=1")
    url = challenge_auth._verify_url(request_url, challenge)
    assert (str(url) if url is not None else None) == expected


async def test_a_challenged_stream_is_answered_and_streams(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = example(tmp_path, clock)
    sent = Sent()
    http = openai_async_http_client(
        transport=httpx.ASGITransport(app=app, client=PEER),
        event_hooks={"request": [sent.ahook]},
    )
    client = sdk(http)
    for n in range(3):
        assert await ask(client, n)
        clock.advance(30)
    sent.take()
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": ASK.format(3)}], stream=True
    )
    pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
    assert len(pieces) > 3 and "".join(p or "" for p in pieces)
    assert sent.paths() == [CHAT, VERIFY, CHAT]
    await http.aclose()
    await app.shutdown()
