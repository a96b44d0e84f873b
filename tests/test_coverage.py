"""coverage: an app's routes read from Starlette, FastAPI, Litestar and Quart, and matched
against a policy as guardrail matches requests (mounts, a Guardrail inside a mount)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from litestar import Litestar, post
from litestar.params import FromPath
from quart import Quart
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Host, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from guardrail import Guardrail, Policy
from guardrail.coverage import CoverageError, app_routes, as_dict, coverage, load_app, render

POLICY = """
version: 1
routes:
  - name: chat
    match: {path: "^/v1/chat/completions$", methods: [POST]}
    limits: [{per: ip, rate: 10/minute}]
  - name: engines
    match: {path: "^/engines/[^/]+/chat/completions$"}
  - name: health
    match: {path: "^/health$"}
    exempt: true
  - name: typo
    match: {path: "^/v1/completion$"}
"""


async def _ok(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def _ws(websocket: Any) -> None:
    await websocket.close()


def _starlette_routes() -> list[Any]:
    return [
        Route("/v1/chat/completions", _ok, methods=["POST"]),
        Route("/chat/completions", _ok, methods=["POST"]),
        Route("/engines/{model}/chat/completions", _ok, methods=["POST"]),
        Route("/health", _ok),
        WebSocketRoute("/v1/realtime", _ws),
    ]


def _rows(policy: str, app: Any) -> dict[tuple[str, str], tuple[str | None, str]]:
    result = coverage(Policy.from_string(policy), app)
    return {(r.method, r.path): (r.route, r.how) for r in result.rows}


def test_starlette_routes_and_what_guards_each() -> None:
    rows = _rows(POLICY, Starlette(routes=_starlette_routes()))
    assert rows == {
        ("POST", "/v1/chat/completions"): ("chat", "matched"),
        ("POST", "/chat/completions"): (None, "unguarded"),
        ("POST", "/engines/{model}/chat/completions"): ("engines", "matched"),
        ("GET", "/health"): ("health", "exempt"),  # HEAD, which follows GET, has no row
        ("WEBSOCKET", "/v1/realtime"): (None, "unguarded"),
    }


def test_unmatched_default_route_and_refuse() -> None:
    app = Starlette(routes=_starlette_routes())
    assert _rows(POLICY + "unmatched: chat\n", app)[("POST", "/chat/completions")] == (
        "chat",
        "unmatched",
    )
    assert _rows(POLICY + "unmatched: refuse\n", app)[("POST", "/chat/completions")] == (
        None,
        "refused",
    )


def test_policy_routes_that_match_nothing_are_reported() -> None:
    policy = Policy.from_string(POLICY)
    result = coverage(policy, Starlette(routes=_starlette_routes()))
    assert result.unused == ((3, "typo", "^/v1/completion$"),)
    text = render(result, policy, "app:app")
    assert "routes[3] typo: ^/v1/completion$" in text
    assert "1 route taking POST unguarded" in text
    assert as_dict(result, policy, "app:app")["unguarded_posts"] == 1


def test_a_guardrail_inside_a_mount_sees_the_paths_below_it() -> None:
    # Starlette's Mount: the policy matches /v1/chat/completions, the client sends /llm/v1/...
    guarded = Guardrail(Starlette(routes=_starlette_routes()), policy=Policy.from_string(POLICY))
    outer = Starlette(routes=[Mount("/llm", app=guarded), Route("/admin", _ok, methods=["POST"])])
    rows = _rows(POLICY, outer)
    assert rows[("POST", "/llm/v1/chat/completions")] == ("chat", "matched")
    assert rows[("POST", "/llm/engines/{model}/chat/completions")] == ("engines", "matched")
    # beside the mount: no Guardrail sees it, whatever the policy says
    assert rows[("POST", "/admin")] == (None, "outside")


def test_fastapi_add_middleware_nested_routers_and_hosts() -> None:
    inner = FastAPI()
    inner.add_api_route("/chat/completions", _ok, methods=["POST"])
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.add_middleware(Guardrail, policy=Policy.from_string(POLICY))
    app.mount("/v1", inner)  # no Guardrail of its own: the outer one sees /v1/chat/completions
    app.router.routes.append(Host("api.example.com", app=Starlette(routes=_starlette_routes())))
    rows = _rows(POLICY, app)
    assert rows[("POST", "/v1/chat/completions")] == ("chat", "matched")
    assert rows[("POST", "/chat/completions")] == (None, "unguarded")  # the Host's


def test_fastapi_api_routers_with_prefixes() -> None:
    """FastAPI includes an APIRouter as one route of its own (``_IncludedRouter``): its routes
    are listed at the paths its prefixes give them, under a Mount too."""
    inner = APIRouter(prefix="/chat")
    inner.add_api_route("/completions", _ok, methods=["POST"])
    outer = APIRouter(prefix="/v1")
    outer.include_router(inner)
    outer.add_api_websocket_route("/realtime", _ws)
    api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    api.include_router(outer)
    api.include_router(outer, prefix="/engines/{model}")
    app = Starlette(routes=[Mount("/api", app=api)])
    rows = _rows(POLICY.replace("^/", "^/api/"), app)
    assert rows[("POST", "/api/v1/chat/completions")] == ("chat", "matched")
    assert rows[("POST", "/api/engines/{model}/v1/chat/completions")] == (None, "unguarded")
    assert ("WEBSOCKET", "/api/v1/realtime") in rows
    assert not any(path == "/api" for _, path in rows)  # not one route taking any method


def test_a_mounted_app_without_routes_takes_any_path() -> None:
    app = Starlette(routes=[Mount("/static", app=StaticFiles(directory=".", check_dir=False))])
    framework, routes = app_routes(app)
    assert framework == "starlette"
    assert [(r.path, r.methods) for r in routes] == [("/static/{path:path}", ("*",))]
    rows = _rows(POLICY, app)
    assert set(rows) == {("GET", "/static/{path:path}"), ("POST", "/static/{path:path}")}


def test_litestar_route_handlers() -> None:
    @post("/engines/{model:str}/chat/completions")
    async def chat(model: FromPath[str]) -> str:
        return model

    rows = _rows(POLICY, Litestar([chat], openapi_config=None))
    assert rows == {("POST", "/engines/{model:str}/chat/completions"): ("engines", "matched")}


def test_quart_url_rules() -> None:
    app = Quart(__name__)

    @app.post("/engines/<model>/chat/completions")
    async def chat(model: str) -> str:
        return model

    rows = _rows(POLICY, app)
    assert rows[("POST", "/engines/<model>/chat/completions")] == ("engines", "matched")


def test_a_framework_it_cannot_read_is_said_plainly() -> None:
    async def bare(scope: Any, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(CoverageError, match="cannot read the routes of a"):
        app_routes(bare)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_colon", "expected module:attribute"),
        ("no_such_module_here:app", "cannot import it (ModuleNotFoundError"),
        ("guardrail:no_such_app", "cannot import it (AttributeError"),
    ],
)
def test_load_app_errors(ref: str, message: str) -> None:
    with pytest.raises(CoverageError, match=message.replace("(", r"\(")):
        load_app(ref)
