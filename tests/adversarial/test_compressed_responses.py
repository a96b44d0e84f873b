"""Issue 11, finding 7: compressed responses went unmetered. A client that sends
``Accept-Encoding: gzip`` to an app behind Starlette's GZipMiddleware got answers guardrail
could not read: each was charged only its reservation (prompt and the default output),
whatever it used, several times the budget. A metered route asks the app for ``identity``
now, and a response that arrives encoded anyway is not served as a free pass."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adversarial.conftest import served, token_budget
from examples.openai_server import FakeModel, build_app
from guardrail import Guardrail, Policy

from conftest import FakeClock

BURST = 1000
ASK = "why is the sky blue"

POLICY = token_budget(BURST, default_max_tokens=20)
POLICY_200 = token_budget(BURST, default_max_tokens=200)


async def test_gzip_answers_without_max_tokens_stay_within_the_budget(clock: FakeClock) -> None:
    # The clock stands still: the bound is the burst (rate * t = 0), plus the one answer
    # that may overrun what was left (a request naming no max_tokens runs into debt once).
    app = Guardrail(
        GZipMiddleware(build_app(FakeModel()), minimum_size=16),
        policy=Policy.from_string(POLICY),
        clock=clock,
    )
    body = {"model": "fake-1", "messages": [{"role": "user", "content": ASK}]}
    spent = admitted = largest = 0
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        for _ in range(60):
            reply = await http.post(
                "/v1/chat/completions",
                headers={"authorization": "Bearer sk-gzip", "accept-encoding": "gzip"},
                json=body,
            )
            if reply.status_code == 429:
                break
            assert reply.status_code == 200
            admitted += 1
            used = reply.json()["usage"]["total_tokens"]
            spent, largest = spent + used, max(largest, used)
    bound = BURST + largest
    # base: 34 answers admitted, 4,454 tokens served (bound: 1,131)
    assert spent <= bound, f"{admitted} answers served {spent} tokens > {bound}"


def _large_answer(usage: bool) -> Starlette:
    """An app that answers with 5.7 MB of JSON (8,000 tokens with logprobs, ~0.7 KB each),
    ``usage`` last as servers write it, or none."""
    logprob = {
        "token": "x",
        "logprob": -0.1,
        "top_logprobs": [{"token": "y", "logprob": -2.5}] * 20,
    }
    content = {"content": [logprob] * 8000}
    body: dict[str, Any] = {
        "id": "c",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "x" * 8000},
                "logprobs": content,
            }
        ],
    }
    if usage:
        body["usage"] = {"prompt_tokens": 10, "completion_tokens": 7990, "total_tokens": 8000}
    raw = json.dumps(body).encode()

    async def chat(request: Request) -> Response:
        await request.body()
        return Response(raw, media_type="application/json")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.mark.parametrize("usage", [True, False], ids=["usage-at-its-end", "no-usage"])
async def test_a_json_answer_too_large_to_copy_is_still_counted(
    clock: FakeClock, usage: bool
) -> None:
    # logprobs make an answer ~0.7 KB a token: past the 4 MB guardrail copies whole, its cost
    # was the reservation (200 tokens) however much was served.
    app = Guardrail(_large_answer(usage), policy=Policy.from_string(POLICY_200), clock=clock)
    ask = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "logprobs": True}
    admitted = 0
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        for _ in range(6):
            response = await http.post(
                "/v1/chat/completions", json=ask, headers={"authorization": "Bearer sk-big"}
            )
            admitted += response.status_code == 200
    served_tokens = admitted * 8000
    print(f"\n{admitted} answers admitted, {served_tokens} tokens served (budget {BURST})")
    assert admitted == 1  # the first goes into debt: nothing more until it is paid back
