"""Test apps and helpers shared by the middleware tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from guardrail import Guardrail, Policy

SECRET = "test-secret-0123456789"

POLICY = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
identity:
  api_key: {header: authorization}
  account: {header: x-account-id}
  client_ip: {trusted_proxies: [10.0.0.1]}
routes:
  - name: health
    match: {path: /healthz}
    exempt: true
  - name: inference
    match: {path: "/v1/chat/completions$", methods: [POST]}
    inspect: openai
    inspect_max_bytes: 1KB
    headers: true
    limits:
      - {per: api_key, rate: 10/minute, burst: 3}
      - {per: subnet, rate: 100/minute, burst: 5}
  - name: default
    match: {path: /}
    limits:
      - {per: ip, rate: 60/minute, burst: 2}
"""


def echo_app() -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.body()
        decision = request.state.guardrail
        return Response(
            body, media_type="application/json", headers={"x-seen-action": decision.action}
        )

    async def page(request: Request) -> Response:
        decision = request.state.guardrail
        return JSONResponse(
            {
                "action": decision.action,
                "tier": decision.tier,
                "score": decision.score,
                "subject": decision.subject.as_dict(),
                "request_id": decision.request_id,
            }
        )

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/healthz", health),
            Route("/{rest:path}", page),
        ]
    )


def build(
    tmp_path: Path,
    clock: Any,
    policy: str = POLICY,
    *,
    storage: str | None = None,
    app: Any = None,
) -> Guardrail:
    return Guardrail(
        app or echo_app(),
        policy=Policy.from_string(policy),
        clock=clock,
        sleep=clock.sleep,
        storage=storage,
        audit=f"file://{tmp_path / 'audit.jsonl'}",
    )


def client(app: Any, peer: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def audit_records(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Drive an app's ASGI lifespan the way a server does."""
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outgoing: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(
        app(
            {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
            incoming.get,
            outgoing.put,
        )
    )
    await incoming.put({"type": "lifespan.startup"})
    assert (await outgoing.get())["type"] == "lifespan.startup.complete"
    yield
    await incoming.put({"type": "lifespan.shutdown"})
    assert (await outgoing.get())["type"] == "lifespan.shutdown.complete"
    await task


async def post_asgi(
    app: Any,
    body: dict[str, Any],
    *,
    path: str = "/v1/chat/completions",
    headers: Sequence[tuple[bytes, bytes]] = (),
    spec: str = "2.3",
) -> list[dict[str, Any]]:
    """POST ``body`` as JSON straight through the ASGI interface, as a server would (one
    request message, then ``http.disconnect``): every message the app sent."""
    raw = json.dumps(body).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
            *headers,
        ],
        "client": ("203.0.113.7", 4000),
        "server": ("testserver", 80),
    }
    incoming = [{"type": "http.request", "body": raw, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent
