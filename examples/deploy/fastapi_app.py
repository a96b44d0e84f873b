"""FastAPI, guarded with ``add_middleware``."""

import os

from fastapi import FastAPI, Request

from guardrail import Guardrail

POLICY = os.environ.get("GUARDRAIL_POLICY", "policy.yaml")

app = FastAPI()
app.add_middleware(Guardrail, policy=POLICY)


@app.post("/v1/chat/completions")
async def chat(request: Request) -> dict[str, str]:
    decision = request.state.guardrail
    return {"route": decision.route, "action": decision.action}


@app.get("/healthz")
async def health() -> str:
    return "ok"
