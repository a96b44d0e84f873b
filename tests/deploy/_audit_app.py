"""The app the audit deployments serve: a Starlette app behind guardrail, its policy file and audit
sink named by the environment (``GUARDRAIL_TEST_POLICY``, ``GUARDRAIL_TEST_AUDIT``), so a real
server process (``uvicorn tests.deploy._audit_app:app``, Daphne, ``--workers 2``) can load it."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from guardrail import Guardrail


async def _page(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Guardrail(
    Starlette(routes=[Route("/{rest:path}", _page)]),
    policy=os.environ["GUARDRAIL_TEST_POLICY"],
    audit=os.environ.get("GUARDRAIL_TEST_AUDIT"),
)
