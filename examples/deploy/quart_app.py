"""Quart, guarded by wrapping its ASGI app; the decision is at ``scope["state"]["guardrail"]``."""

import os

from quart import Quart, request

from guardrail import Guardrail

POLICY = os.environ.get("GUARDRAIL_POLICY", "policy.yaml")

app = Quart(__name__)


@app.post("/v1/chat/completions")
async def chat() -> dict[str, str]:
    decision = request.scope["state"]["guardrail"]
    return {"route": decision.route, "action": decision.action}


@app.get("/healthz")
async def health() -> str:
    return "ok"


app.asgi_app = Guardrail(app.asgi_app, policy=POLICY)
