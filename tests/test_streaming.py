"""Response bodies stream through guardrail unbuffered: proven on a real uvicorn over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from helpers import build
from redis_servers import free_port


async def test_first_sse_chunk_reaches_the_client_before_the_app_produces_the_last(
    tmp_path: Path, clock
):
    release = asyncio.Event()
    produced: list[str] = []

    async def events() -> AsyncIterator[bytes]:
        produced.append("first")
        yield b"data: first\n\n"
        await asyncio.wait_for(release.wait(), timeout=10)
        produced.append("last")
        yield b"data: last\n\n"

    async def sse(request: Request) -> StreamingResponse:
        return StreamingResponse(events(), media_type="text/event-stream")

    app = build(tmp_path, clock, app=Starlette(routes=[Route("/stream", sse)]))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 (uvicorn exposes no startup event)
            await asyncio.sleep(0.01)
        async with (
            httpx.AsyncClient() as http,
            http.stream("GET", f"http://127.0.0.1:{port}/stream") as response,
        ):
            assert response.status_code == 200
            assert "guardrail-request-id" in response.headers
            chunks = response.aiter_raw()
            first = await anext(chunks)
            assert first == b"data: first\n\n"
            assert produced == ["first"]  # the app has not produced the last chunk yet
            release.set()
            rest = b"".join([chunk async for chunk in chunks])
            assert rest == b"data: last\n\n"
    finally:
        server.should_exit = True
        await serving
    assert app.audit.closed  # lifespan shutdown flushed and closed the audit trail
