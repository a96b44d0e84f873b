"""Starlette, guarded with ``add_middleware`` (the form of the README's quick start)."""

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from guardrail import Guardrail

POLICY = os.environ.get("GUARDRAIL_POLICY", "policy.yaml")


async def chat(request: Request) -> JSONResponse:
    decision = request.state.guardrail  # scope["state"]["guardrail"]
    return JSONResponse({"route": decision.route, "action": decision.action})


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/healthz", health)]
)
app.add_middleware(Guardrail, policy=POLICY)
