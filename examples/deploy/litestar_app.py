"""Litestar, guarded by wrapping the app. Litestar builds its ``middleware=[...]`` once per
route handler, so guardrail refuses to be one of them: wrap the whole app instead."""

import os

from litestar import Litestar, Request, get, post

from guardrail import Guardrail

POLICY = os.environ.get("GUARDRAIL_POLICY", "policy.yaml")


@post("/v1/chat/completions", status_code=200)
async def chat(request: Request) -> dict[str, str]:
    decision = request.scope["state"]["guardrail"]
    return {"route": decision.route, "action": decision.action}


@get("/healthz")
async def health() -> str:
    return "ok"


app = Guardrail(Litestar(route_handlers=[chat, health]), policy=POLICY)
