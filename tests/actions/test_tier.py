"""A throttle tier's rewrites and pacing: max_tokens capped (and added) in the body the app
receives, with its Content-Length; logprobs and n stripped; a body too large to rewrite
refused; streamed events paced on the injected clock, the first at once, none held back."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from guardrail import Guardrail, Policy

from conftest import FakeClock
from helpers import audit_records, client, post_asgi

TIER = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
routes:
  - name: inference
    match: {{path: "/v1/(chat/completions|completions|responses)$", methods: [POST]}}
    inspect: openai
    inspect_max_bytes: 4KB
    limits:
      - {{per: ip, rate: 1000/minute}}
      - {{per: ip, rate: 100000/day, cost: tokens}}
thresholds:
  - {{score: 0, action: throttle, tier: slow}}   # every request: the tier is what is tested
tiers:
  slow:
{tier}
"""


def guarded(tmp_path: Path, clock: FakeClock, tier: str, app: Any) -> Guardrail:
    return Guardrail(
        app,
        policy=Policy.from_string(TIER.format(tier=tier)),
        clock=clock,
        sleep=clock.sleep,
        audit=f"file://{tmp_path / 'audit.jsonl'}",
    )


def receiver() -> tuple[Starlette, list[dict[str, Any]]]:
    """An app that answers what it received: the body and its Content-Length."""
    seen: list[dict[str, Any]] = []

    async def echo(request: Request) -> Response:
        raw = await request.body()
        seen.append({"body": json.loads(raw), "length": request.headers.get("content-length")})
        assert seen[-1]["length"] == str(len(raw))
        return JSONResponse({"usage": {"total_tokens": 10}})

    paths = ("/v1/chat/completions", "/v1/completions", "/v1/responses")
    return Starlette(routes=[Route(p, echo, methods=["POST"]) for p in paths]), seen


CHAT = {"model": "m", "messages": [{"role": "user", "content": "tell me everything"}]}


@pytest.mark.parametrize(
    ("path", "body", "key"),
    [
        ("/v1/chat/completions", {**CHAT, "max_tokens": 4096}, "max_tokens"),
        ("/v1/chat/completions", {**CHAT, "max_completion_tokens": 900}, "max_completion_tokens"),
        ("/v1/chat/completions", CHAT, "max_tokens"),  # none named: the cap is added
        ("/v1/completions", {"model": "m", "prompt": "once upon", "max_tokens": 500}, "max_tokens"),
        (
            "/v1/responses",
            {"model": "m", "input": "hi", "max_output_tokens": 300},
            "max_output_tokens",
        ),
        ("/v1/responses", {"model": "m", "input": "hi"}, "max_output_tokens"),
    ],
)
async def test_a_tier_caps_max_tokens_in_the_body_the_app_receives(
    tmp_path: Path, clock: FakeClock, path: str, body: dict[str, Any], key: str
) -> None:
    app, seen = receiver()
    guard = guarded(tmp_path, clock, "    max_tokens: 64", app)
    async with client(guard) as http:
        response = await http.post(path, json=body)
    await guard.shutdown()
    assert response.status_code == 200
    [received] = seen
    assert received["body"][key] == 64
    rest = {k: v for k, v in received["body"].items() if k != key}
    assert rest == {k: v for k, v in body.items() if k != key}  # nothing else changed
    # the reservation is what the app was allowed: the capped 64, not what was asked
    [record] = audit_records(tmp_path)
    assert record["action"] == "throttle"
    assert record["tokens"]["reserved"] <= 64 + 10


async def test_a_body_under_the_cap_reaches_the_app_byte_for_byte(
    tmp_path: Path, clock: FakeClock
) -> None:
    raw = b'{"model": "m",  "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}'
    received: list[bytes] = []

    async def echo(request: Request) -> Response:
        received.append(await request.body())
        return JSONResponse({})

    app = Starlette(routes=[Route("/v1/chat/completions", echo, methods=["POST"])])
    guard = guarded(tmp_path, clock, "    max_tokens: 64", app)
    async with client(guard) as http:
        await http.post(
            "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
        )
    await guard.shutdown()
    assert received == [raw]


async def test_a_tier_strips_logprobs_and_extra_choices(tmp_path: Path, clock: FakeClock) -> None:
    app, seen = receiver()
    guard = guarded(tmp_path, clock, "    strip: [logprobs, n]", app)
    body = {**CHAT, "logprobs": True, "top_logprobs": 20, "n": 8, "temperature": 1.0}
    completion = {"model": "m", "prompt": "x", "logprobs": 5, "n": 4, "best_of": 8}
    response_body = {"model": "m", "input": "x", "include": ["message.output_text.logprobs"]}
    async with client(guard) as http:
        await http.post("/v1/chat/completions", json=body)
        await http.post("/v1/completions", json=completion)
        await http.post("/v1/responses", json=response_body)
    await guard.shutdown()
    assert [s["body"] for s in seen] == [
        {**CHAT, "temperature": 1.0},
        {"model": "m", "prompt": "x"},
        {"model": "m", "input": "x", "include": []},
    ]


async def test_a_body_too_large_to_cap_is_refused_not_passed(
    tmp_path: Path, clock: FakeClock
) -> None:
    app, seen = receiver()
    guard = guarded(tmp_path, clock, "    max_tokens: 64", app)
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    async with client(guard) as http:
        response = await http.post("/v1/chat/completions", json=big)
    await guard.shutdown()
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert seen == []
    [record] = audit_records(tmp_path)
    assert record["status"] == 413


async def test_mode_observe_rewrites_nothing(tmp_path: Path, clock: FakeClock) -> None:
    app, seen = receiver()
    text = TIER.format(tier="    max_tokens: 64\n    strip: [n]").replace(
        "version: 1", "version: 1\nmode: observe"
    )
    guard = Guardrail(
        app,
        policy=Policy.from_string(text.replace("env:GUARDRAIL_TEST_SECRET", "literal-observe")),
        clock=clock,
        audit=f"file://{tmp_path / 'audit.jsonl'}",
    )
    async with client(guard) as http:
        await http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4096, "n": 3})
    await guard.shutdown()
    assert seen[0]["body"] == {**CHAT, "max_tokens": 4096, "n": 3}


# -- stream pacing ---------------------------------------------------------------------------


def chunk(content: str) -> bytes:
    payload = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": content}}]}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


async def drive(
    guard: Guardrail, body: dict[str, Any], clock: FakeClock
) -> list[tuple[float, bytes]]:
    """One request straight through the ASGI interface: each body message with the injected
    time at which guardrail sent it on."""
    sent: list[tuple[float, bytes]] = []

    async def timed(scope: Any, receive: Any, send: Any) -> None:
        async def stamp(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                sent.append((clock(), message.get("body", b"")))
            await send(message)

        await guard(scope, receive, stamp)

    await post_asgi(timed, body)
    return sent


async def test_stream_rate_paces_events_on_the_injected_clock(
    tmp_path: Path, clock: FakeClock
) -> None:
    produced: list[float] = []

    async def events():  # type: ignore[no-untyped-def]
        produced.append(clock())
        yield b'data: {"choices": [{"delta": {"role": "assistant", "content": ""}}]}\n\n'
        for i in range(100):
            produced.append(clock())
            yield chunk(f" w{i}")
        yield b"data: [DONE]\n\n"

    async def stream(request: Request) -> StreamingResponse:
        await request.body()
        return StreamingResponse(events(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", stream, methods=["POST"])])
    guard = guarded(tmp_path, clock, "    stream_rate: 20/second", app)
    start = clock()
    sent = await drive(guard, {**CHAT, "stream": True}, clock)
    await guard.shutdown()
    content = [(t - start, body) for t, body in sent if b'"content": " w' in body]
    assert len(content) == 100
    assert sent[0][0] == start  # the first chunk at once
    # 100 chunks at 20 a second: 5 s of injected time (epoch-second floats resolve 0.24 µs)
    assert content[-1][0] >= 5.0 - 1e-6
    gaps = [b[0] - a[0] for a, b in pairwise(content)]
    assert all(gap == pytest.approx(0.05, abs=1e-6) for gap in gaps)
    # nothing was buffered: the app wrote each event only after the one before went out
    # (event i+1 is produced once event i, due at i * 0.05 s, has gone out)
    assert all(p >= start + (i - 1) * 0.05 - 1e-6 for i, p in enumerate(produced[1:101], 1))
    assert b"".join(body for _, body in sent).endswith(b"data: [DONE]\n\n")


async def test_pacing_keeps_events_whole_when_the_app_splits_them(
    tmp_path: Path, clock: FakeClock
) -> None:
    whole = [chunk(f" w{i}") for i in range(6)]
    stream_bytes = b"".join(whole)
    pieces = [stream_bytes[i : i + 37] for i in range(0, len(stream_bytes), 37)]

    async def events():  # type: ignore[no-untyped-def]
        for piece in pieces:
            yield piece

    async def stream(request: Request) -> StreamingResponse:
        await request.body()
        return StreamingResponse(events(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", stream, methods=["POST"])])
    guard = guarded(tmp_path, clock, "    stream_rate: 10/second", app)
    sent = await drive(guard, {**CHAT, "stream": True}, clock)
    await guard.shutdown()
    bodies = [body for _, body in sent if body]
    assert bodies == whole  # one whole event per message, bytes as the app wrote them


async def test_a_rewrite_keeps_what_json_keeps(tmp_path: Path, clock: FakeClock) -> None:
    received: list[bytes] = []

    async def echo(request: Request) -> Response:
        received.append(await request.body())
        return JSONResponse({})

    app = Starlette(routes=[Route("/v1/chat/completions", echo, methods=["POST"])])
    guard = guarded(tmp_path, clock, "    max_tokens: 64", app)
    raw = (
        b'{"model": "m", "seed": 18446744073709551616, "temperature": NaN, "max_tokens": 900,'
        b' "user": "\\ud800", "messages": [{"role": "user", "content": "caf\\u00e9"}]}'
    )
    async with client(guard) as http:
        await http.post(
            "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
        )
    await guard.shutdown()
    [body] = received
    assert b'"seed":18446744073709551616' in body  # not 1.8446744073709552e+19
    assert b'"temperature":NaN' in body and b'"user":"\\ud800"' in body
    assert json.loads(body)["messages"][0]["content"] == "café"
    assert json.loads(body)["max_tokens"] == 64


@pytest.mark.parametrize(
    ("raw", "headers"),
    [
        (b'{"messages": ' + b"[" * 1020 + b"]" * 1020 + b"}", {}),  # deeper than json reads
        (b"\x1f\x8b\x08\x00compressed", {"content-encoding": "gzip"}),
        (b"[1, 2, 3]", {}),
    ],
    ids=["nested", "gzip", "not-an-object"],
)
async def test_a_body_the_tier_cannot_rewrite_is_refused_not_passed_uncapped(
    tmp_path: Path, clock: FakeClock, raw: bytes, headers: dict[str, str]
) -> None:
    app, seen = receiver()
    guard = guarded(tmp_path, clock, "    max_tokens: 64", app)
    async with client(guard) as http:
        response = await http.post(
            "/v1/chat/completions",
            content=raw,
            headers={"content-type": "application/json", **headers},
        )
    await guard.shutdown()
    assert response.status_code == 415
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert seen == []
