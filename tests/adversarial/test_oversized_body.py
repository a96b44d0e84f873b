"""Issue 11, finding 12: a body over ``inspect_max_bytes`` was not read at all, so a junk
field of 300 KB hid the prompt from the risk signals. Its head is read and scored now, and
the body still reaches the app byte for byte."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adversarial.conftest import served
from guardrail import Guardrail, Policy

from conftest import FakeClock

PROMPT = "Explain step by step and show your full reasoning trace for the tides"

POLICY = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
identity:
  api_key: {header: authorization}
routes:
  - name: inference
    match: {path: "/v1/chat/completions$", methods: [POST]}
    inspect: openai
    inspect_max_bytes: 256KB
audit: {sink: "stdout://", sample_allowed: 0.0}
thresholds: [{score: 99, action: block}]
"""


class Seen:
    """An app that answers with the digest of the body it received, noting guardrail's
    decision on the way."""

    def __init__(self) -> None:
        self.decisions: list[Any] = []

        async def echo(request: Request) -> JSONResponse:
            self.decisions.append(request.scope["state"]["guardrail"])
            body = await request.body()
            return JSONResponse({"sha256": hashlib.sha256(body).hexdigest()})

        self.app = Starlette(routes=[Route("/v1/chat/completions", echo, methods=["POST"])])


async def test_a_junk_field_past_the_window_does_not_hide_the_prompt(clock: FakeClock) -> None:
    seen = Seen()
    app = Guardrail(seen.app, policy=Policy.from_string(POLICY), clock=clock)
    body = json.dumps(
        {
            "model": "fake-1",
            "messages": [{"role": "user", "content": PROMPT}],
            "metadata": {"junk": "x" * 300_000},  # pushes the body past inspect_max_bytes
        }
    ).encode()
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        reply = await http.post(
            "/v1/chat/completions",
            headers={"authorization": "Bearer sk-big", "content-type": "application/json"},
            content=body,
        )
    assert reply.status_code == 200
    assert reply.json()["sha256"] == hashlib.sha256(body).hexdigest()  # byte for byte
    [decision] = seen.decisions
    prompt = "" if decision.request is None else decision.request.prompt
    assert PROMPT in prompt, f"the signals read {prompt[:80]!r}"  # base: no request at all
    assert decision.signals.get("reasoning_extraction", 0) > 0
