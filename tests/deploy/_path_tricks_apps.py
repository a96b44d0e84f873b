"""Apps for tests/deploy/test_path_tricks.py: one chat handler that answers 200 without reading
guardrail's decision (so a request guardrail let through unmatched is served, as in an app that
does not look), under Litestar and Quart, which route on a path they normalise themselves."""

import os

from litestar import Litestar, post
from quart import Quart

from guardrail import Guardrail

POLICY = os.environ.get("GUARDRAIL_POLICY", "policy.yaml")


@post("/v1/chat/completions", status_code=200)
async def chat() -> str:
    return "served"


litestar_app = Guardrail(Litestar(route_handlers=[chat]), policy=POLICY)

_quart = Quart(__name__)


@_quart.post("/v1/chat/completions")
async def quart_chat() -> str:
    return "served"


quart_app = Guardrail(_quart, policy=POLICY)
