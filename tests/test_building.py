"""building.py: who builds a Guardrail, and what it is when it cannot be built.

Driven through the real frameworks: Starlette and FastAPI build ``add_middleware`` on their
first ASGI call (the lifespan), Litestar once per route handler at construction.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from litestar import Litestar, post
from litestar.middleware import DefineMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, Router
from starlette.types import ASGIApp, Message

from guardrail import Guardrail, PolicyError
from guardrail.building import Unstarted
from guardrail.errors import DeploymentError

from helpers import POLICY

BROKEN = POLICY.replace("rate: 10/minute", "rate: ten a minute").replace("burst: 2", "burst: -2")


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"action={request.state.guardrail.action}")


ROUTES = [Route("/v1/chat/completions", hello, methods=["POST"])]


def policy_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return str(path)


def starlette_added(policy: str) -> ASGIApp:
    app = Starlette(routes=ROUTES)
    app.add_middleware(Guardrail, policy=policy)
    return app


def starlette_listed(policy: str) -> ASGIApp:
    return Starlette(routes=ROUTES, middleware=[Middleware(Guardrail, policy=policy)])


def fastapi_added(policy: str) -> ASGIApp:
    app = FastAPI()
    app.add_api_route("/v1/chat/completions", hello, methods=["POST"])
    app.add_middleware(Guardrail, policy=policy)
    return app


LAZY = [starlette_added, starlette_listed, fastapi_added]


async def lifespan_startup(app: ASGIApp) -> list[Message]:
    incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    outgoing: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        outgoing.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return outgoing


async def test_built_directly_a_broken_policy_raises_at_once(tmp_path: Path) -> None:
    # in a running event loop too: only a framework's lazy build defers the error
    with pytest.raises(PolicyError, match="2 errors"):
        Guardrail(Starlette(), policy=policy_file(tmp_path, BROKEN))


@pytest.mark.parametrize("form", LAZY)
async def test_built_lazily_a_broken_policy_fails_the_lifespan_startup(
    tmp_path: Path, form, caplog: pytest.LogCaptureFixture
) -> None:
    app = form(policy_file(tmp_path, BROKEN))
    with caplog.at_level(logging.ERROR, "guardrail"):
        sent = await lifespan_startup(app)
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    message = sent[0]["message"]
    assert message.startswith("PolicyError: policy refused, 2 errors:")
    assert "rate: 'ten a minute'" in message and "burst: -2" in message
    logged = [r for r in caplog.records if r.name == "guardrail"]
    assert len(logged) == 1 and "burst: -2" in logged[0].getMessage()


@pytest.mark.parametrize("form", LAZY)
async def test_built_lazily_without_lifespan_every_request_is_refused_503(
    tmp_path: Path, form
) -> None:
    app = form(policy_file(tmp_path, BROKEN))
    transport = httpx.ASGITransport(app=app)  # no lifespan: the first request builds it
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answers = [await client.post("/v1/chat/completions"), await client.get("/anything")]
    assert [a.status_code for a in answers] == [503, 503]
    body = answers[0].json()
    assert body["type"] == "guardrail-not-started"
    assert body["detail"].startswith("guardrail could not start (PolicyError: policy refused, 2")
    assert "ten a minute" not in body["detail"]
    assert answers[0].headers["content-type"] == "application/problem+json"
    assert answers[0].json()["request_id"] != answers[1].json()["request_id"]


async def test_built_lazily_a_websocket_is_closed_before_accept(tmp_path: Path) -> None:
    app = starlette_added(policy_file(tmp_path, BROKEN))
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "websocket", "path": "/ws", "headers": []}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1011, "reason": "guardrail not started"}]


async def test_unstarted_startup_raises_its_error_and_shutdown_is_quiet(tmp_path: Path) -> None:
    app = Starlette(routes=ROUTES, middleware=[Middleware(Guardrail, policy="no/such.yaml")])
    await lifespan_startup(app)
    guard = app.middleware_stack.app  # type: ignore[union-attr]
    assert isinstance(guard, Unstarted)
    with pytest.raises(PolicyError):
        await guard.startup()
    await guard.aclose()


@pytest.mark.parametrize("form", LAZY)
async def test_built_lazily_a_good_policy_guards(tmp_path: Path, form) -> None:
    app = form(policy_file(tmp_path, POLICY))
    sent = await lifespan_startup(app)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        codes = [
            (await client.post("/v1/chat/completions", headers={"authorization": "k"})).status_code
            for _ in range(4)
        ]
    assert codes == [200, 200, 200, 429]


def test_litestar_per_handler_middleware_is_refused_with_the_fix(tmp_path: Path) -> None:
    @post("/v1/chat/completions")
    async def chat() -> str:
        return "ok"

    with pytest.raises(DeploymentError) as refused:
        Litestar(
            route_handlers=[chat],
            middleware=[DefineMiddleware(Guardrail, policy=policy_file(tmp_path, POLICY))],
        )
    assert "once per route handler" in str(refused.value)
    assert "app = Guardrail(Litestar(route_handlers=[...]), policy=...)" in str(refused.value)


def test_a_factory_is_seen_through(tmp_path: Path) -> None:
    policy = policy_file(tmp_path, POLICY)

    def guarded(app: ASGIApp) -> ASGIApp:
        return Guardrail(app, policy=policy)

    @post("/v1/chat/completions")
    async def chat() -> str:
        return "ok"

    with pytest.raises(DeploymentError, match="Litestar"):
        Litestar(route_handlers=[chat], middleware=[guarded])
    with pytest.raises(DeploymentError, match="Starlette"):
        Route("/v1/chat/completions", hello, middleware=[Middleware(guarded)])


async def test_a_factory_built_lazily_defers_too(tmp_path: Path) -> None:
    policy = policy_file(tmp_path, BROKEN)
    app = Starlette(
        routes=ROUTES, middleware=[Middleware(lambda app: Guardrail(app, policy=policy))]
    )
    assert [m["type"] for m in await lifespan_startup(app)] == ["lifespan.startup.failed"]


def test_starlette_route_middleware_is_refused_mount_and_router_are_not(tmp_path: Path) -> None:
    policy = policy_file(tmp_path, POLICY)
    with pytest.raises(DeploymentError, match=r"app.add_middleware\(Guardrail, policy=...\)"):
        Route("/v1/chat/completions", hello, middleware=[Middleware(Guardrail, policy=policy)])
    # one guardrail around a mounted app, or around a router: one instance, not one a route
    mounted = Mount("/llm", routes=ROUTES, middleware=[Middleware(Guardrail, policy=policy)])
    assert isinstance(mounted.app, Guardrail)
    router = Router(routes=ROUTES, middleware=[Middleware(Guardrail, policy=policy)])
    assert isinstance(router.middleware_stack, Guardrail)
