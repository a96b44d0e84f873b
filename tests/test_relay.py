"""The relay on the way back, on what servers and apps actually send: ASGI spec 2.4 (where
Starlette turns a send error into ClientDisconnect), compressed streams, streams without
events, a model server that ignores max_tokens."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from guardrail import Guardrail, Policy
from test_budgets import policy

from conftest import FakeClock
from helpers import audit_records, post_asgi

CHAT = {"model": "m", "messages": [{"role": "user", "content": "why is the sky blue"}]}


def chunk(content: str) -> bytes:
    payload = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": content}}]}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def streaming(pieces: list[bytes], headers: dict[str, str] | None = None) -> Starlette:
    async def events() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async def stream(request: Request) -> StreamingResponse:
        await request.body()
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    return Starlette(routes=[Route("/v1/chat/completions", stream, methods=["POST"])])


def guarded(tmp_path: Path, clock: FakeClock, app: Any, burst: int = 100) -> Guardrail:
    return Guardrail(
        app,
        policy=Policy.from_string(policy(burst=burst, default_max_tokens=50)),
        clock=clock,
        sleep=clock.sleep,
        audit=f"file://{tmp_path / 'audit.jsonl'}",
    )


async def drive(
    guard: Guardrail, body: dict[str, Any], spec: str = "2.3"
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """One request through the ASGI interface: the messages guardrail sent, and the bodies."""
    key = [(b"authorization", b"Bearer sk-budget-1")]
    sent = await post_asgi(guard, body, headers=key, spec=spec)
    return sent, [m.get("body", b"") for m in sent if m["type"] == "http.response.body"]


async def test_a_cut_under_asgi_spec_2_4_stays_inside_guardrail(
    tmp_path: Path, clock: FakeClock
) -> None:
    # Starlette answers an OSError from send with ClientDisconnect on spec 2.4 servers
    app = streaming([chunk(f" w{i}") for i in range(200)])
    guard = guarded(tmp_path, clock, app)
    sent, bodies = await drive(guard, CHAT, spec="2.4")  # raises nothing
    await guard.shutdown()
    assert sent[-1] == {"type": "http.response.body", "body": bodies[-1], "more_body": False}
    assert bodies[-1].endswith(b"data: [DONE]\n\n") and b'"error"' in bodies[-1]
    [record] = audit_records(tmp_path)
    assert record["action"] == "limit"


async def test_a_server_that_ignores_max_tokens_is_cut_past_twice_the_reservation(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = streaming([chunk(f" w{i}") for i in range(200)])  # max_tokens 10 asked, 200 sent
    guard = guarded(tmp_path, clock, app, burst=100)
    _, bodies = await drive(guard, {**CHAT, "max_tokens": 10})
    await guard.shutdown()
    delivered = [b for b in bodies if b'"content"' in b and b'"error"' not in b]
    assert b'"error"' in bodies[-1]
    # Reserved 9 + 10 = 19. Unwatched while the overrun is within 19 + 64 (estimates err),
    # so 93 tokens go out; the 94th needs 84 more and the budget has 81: the stream ends. The
    # overrun is settled into debt (9 + 93 = 102 of 100).
    assert len(delivered) == 93
    [record] = audit_records(tmp_path)
    assert record["tokens"] == {"reserved": 19, "used": 102}


async def test_the_app_is_asked_for_an_uncompressed_response(
    tmp_path: Path, clock: FakeClock
) -> None:
    asked: list[str | None] = []

    async def stream(request: Request) -> StreamingResponse:
        asked.append(request.headers.get("accept-encoding"))
        return StreamingResponse(iter([chunk(" hi")]), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", stream, methods=["POST"])])
    guard = guarded(tmp_path, clock, app, burst=1000)
    key = [(b"authorization", b"Bearer sk-budget-1"), (b"accept-encoding", b"gzip, br")]
    sent = await post_asgi(guard, {**CHAT, "max_tokens": 30}, headers=key)
    await guard.shutdown()
    assert asked == ["identity"]
    assert sent[0]["status"] == 200


async def test_a_compressed_stream_is_not_served_uncounted(
    tmp_path: Path, clock: FakeClock
) -> None:
    # the app compressed its stream though asked for identity: guardrail cannot count it
    pieces = [b"\x1f\x8b\x08\x00" + bytes(range(40)) for _ in range(5)]
    app = streaming(pieces, headers={"content-encoding": "gzip"})
    guard = guarded(tmp_path, clock, app, burst=1000)
    sent, bodies = await drive(guard, {**CHAT, "max_tokens": 30})
    await guard.shutdown()
    assert sent[0]["status"] == 502
    problem = json.loads(b"".join(bodies))
    assert problem["type"] == "uncountable-response" and problem["error"]["type"] == "server_error"
    assert not any(piece in b"".join(bodies) for piece in pieces)  # none of it went out
    [record] = audit_records(tmp_path)
    assert record["status"] == 502 and record["action"] == "allow"
    assert record["tokens"] == {"reserved": 39, "used": None}  # the reservation stands


async def test_a_stream_without_events_is_passed_on_not_held(
    tmp_path: Path, clock: FakeClock
) -> None:
    line = b"x" * 1023 + b"\n"  # lines, never a blank one: no event ever ends
    app = streaming([line] * 400)
    guard = guarded(tmp_path, clock, app, burst=1000)
    _, bodies = await drive(guard, {**CHAT, "max_tokens": 30})
    await guard.shutdown()
    assert b"".join(bodies) == line * 400
    held = [len(b) for b in bodies]
    assert max(held) <= 256 * 1024 + 1024  # at most one event's worth was ever held back
    [record] = audit_records(tmp_path)
    assert record["tokens"]["used"] is None  # unmetered: the reservation stands
