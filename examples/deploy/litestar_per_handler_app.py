"""What NOT to do: Litestar builds ``middleware=[...]`` once per route handler, each a guardrail
of its own (separate limits, forked audit chains, no lifespan, no /.guardrail/ pages). guardrail
refuses it at construction with the fix; tests/deploy/test_frameworks.py checks that."""

import os

from litestar import Litestar, post
from litestar.middleware import DefineMiddleware

from guardrail import Guardrail

POLICY = os.environ.get("GUARDRAIL_POLICY", "policy.yaml")


@post("/v1/chat/completions", status_code=200)
async def chat() -> dict[str, str]:
    return {"route": "chat"}


@post("/v1/completions", status_code=200)
async def complete() -> dict[str, str]:
    return {"route": "completions"}


app = Litestar(
    route_handlers=[chat, complete], middleware=[DefineMiddleware(Guardrail, policy=POLICY)]
)
