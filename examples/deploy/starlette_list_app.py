"""Starlette, guarded with a ``Middleware`` entry in the app's middleware list."""

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from guardrail import Guardrail

POLICY = os.environ.get("GUARDRAIL_POLICY", "policy.yaml")


async def chat(request: Request) -> JSONResponse:
    decision = request.state.guardrail
    return JSONResponse({"route": decision.route, "action": decision.action})


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/healthz", health)],
    middleware=[Middleware(Guardrail, policy=POLICY)],
)
