"""The deployments of issue 12 item 1: guardrail under a path prefix, served by a real server.

Each setup yields ``(base URL, send_path)``: ``send_path`` turns the public path a client uses
(``/llm/...``) into what reaches the server (a proxy strips the prefix in front of
``uvicorn --root-path`` and Hypercorn's ``--root-path``; a mount sees it whole).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from tests.adversarial.conftest import served

from guardrail import Guardrail, Policy

from redis_servers import free_port

PREFIX = "/llm"
SETUPS = (
    "uvicorn-root-path",
    "hypercorn-root-path",
    "starlette-mount",
    "fastapi-mount",
    "fastapi-root-path",
)


async def _chat(request: Request) -> Response:
    await request.body()
    return PlainTextResponse("served")


async def _page(request: Request) -> Response:
    return PlainTextResponse("page")


def starlette_inner() -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/chat/completions", _chat, methods=["POST"]),
            Route("/v1/page", _page),
        ]
    )


def fastapi_inner(**options: Any) -> FastAPI:
    app = FastAPI(**options)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await _chat(request)

    @app.get("/v1/page")
    async def page(request: Request) -> Response:
        return await _page(request)

    return app


def closing(guard: Guardrail) -> Callable[[Any], Any]:
    """The outer app's lifespan: a mount forwards none to the app it mounts, so the outer app
    starts and stops guardrail (its audit trail flushed at shutdown)."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await guard.startup()
        yield
        await guard.shutdown()

    return lifespan


def strip(path: str) -> str:
    return path.removeprefix(PREFIX) or "/"


@asynccontextmanager
async def hypercorn_served(app: Any, root_path: str) -> AsyncIterator[str]:
    port = free_port()
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{port}"]
    config.root_path = root_path
    config.loglevel = "WARNING"
    stop = asyncio.Event()
    serving = asyncio.create_task(
        hypercorn_serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    )
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    if serving.done():
                        await serving
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                await writer.wait_closed()
                break
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await serving


@asynccontextmanager
async def deployed(
    setup: str, policy: str, audit: str
) -> AsyncIterator[tuple[str, Callable[[str], str]]]:
    """guardrail with ``policy`` deployed under ``PREFIX`` the way ``setup`` names."""
    options: dict[str, Any] = {"policy": Policy.from_string(policy), "audit": audit}
    if setup == "uvicorn-root-path":
        async with served(Guardrail(starlette_inner(), **options), root_path=PREFIX) as url:
            yield url, strip
    elif setup == "hypercorn-root-path":
        async with hypercorn_served(Guardrail(starlette_inner(), **options), PREFIX) as url:
            yield url, strip
    elif setup == "starlette-mount":
        guard = Guardrail(starlette_inner(), **options)
        outer = Starlette(routes=[Mount(PREFIX, app=guard)], lifespan=closing(guard))
        async with served(outer) as url:
            yield url, str
    elif setup == "fastapi-mount":
        guard = Guardrail(fastapi_inner(), **options)
        app = FastAPI(lifespan=closing(guard))
        app.mount(PREFIX, guard)
        async with served(app) as url:
            yield url, str
    elif setup == "fastapi-root-path":
        # The README's quick start (add_middleware) under `fastapi run --root-path /llm`
        app = fastapi_inner()
        app.add_middleware(Guardrail, **options)
        async with served(app, root_path=PREFIX) as url:
            yield url, strip
    else:
        raise AssertionError(setup)
