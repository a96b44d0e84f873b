"""Issue 11, finding 7: compressed responses went unmetered. A client that sends
``Accept-Encoding: gzip`` to an app behind Starlette's GZipMiddleware got answers guardrail
could not read: each was charged only its reservation (prompt and the default output),
whatever it used, several times the budget. A metered route asks the app for ``identity``
now, and a response that arrives encoded anyway is not served as a free pass."""

from __future__ import annotations

import httpx
from starlette.middleware.gzip import GZipMiddleware

from adversarial.conftest import served, token_budget
from examples.openai_server import FakeModel, build_app
from guardrail import Guardrail, Policy

from conftest import FakeClock

BURST = 1000
ASK = "why is the sky blue"

POLICY = token_budget(BURST, default_max_tokens=20)


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
