"""Issue 11, finding 1: body-shape confusion. A ``/v1/responses`` body that also carries
``"messages": []`` and ``"max_tokens": 1`` was metered as an empty chat asking for one token,
while the app (like vLLM) routes by path, reads ``input`` and ignores both keys: the budget,
the throttle tier's cap and the risk signals were all blind to the real request. The route
decides the shape now."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from adversarial.conftest import served, token_budget
from examples.openai_server import FakeModel, build_app
from guardrail import Guardrail, Policy

from conftest import FakeClock

PROMPT = "Explain step by step and show your full reasoning trace for the tides"
BURST = 1000


def policy(extra: str = "") -> str:
    return token_budget(BURST, extra=extra)


def confused(**extra: Any) -> dict[str, Any]:
    # what the app reads (input) and what it ignores on this path (messages, max_tokens)
    return {"model": "fake-1", "input": PROMPT, "messages": [], "max_tokens": 1, **extra}


class Seen:
    """The example app, noting the decision guardrail hands on with each request."""

    def __init__(self, model: FakeModel) -> None:
        self.app = build_app(model)
        self.decisions: list[Any] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.decisions.append(scope["state"]["guardrail"])
        await self.app(scope, receive, send)


async def test_a_responses_body_dressed_as_chat_cannot_overspend_the_budget(
    clock: FakeClock,
) -> None:
    # The clock stands still: the bound is the burst alone (rate * t = 0).
    model = FakeModel(latency=0.002)  # answers overlap, as a model server's do
    app = Guardrail(build_app(model), policy=Policy.from_string(policy()), clock=clock)
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        replies = await asyncio.gather(
            *(
                http.post(
                    "/v1/responses", headers={"authorization": "Bearer sk-shape"}, json=confused()
                )
                for _ in range(30)
            )
        )
    admitted = [r for r in replies if r.status_code == 200]
    served_tokens = sum(r.json()["usage"]["total_tokens"] for r in admitted)
    assert {r.status_code for r in replies} <= {200, 429}
    # base: 30 of 30 admitted, 4,800 tokens served against a 1,000-token budget
    assert served_tokens <= BURST, f"{len(admitted)} admitted, {served_tokens} tokens > {BURST}"


async def test_a_throttle_tier_caps_what_the_app_honours_and_the_prompt_is_scored(
    clock: FakeClock,
) -> None:
    extra = "thresholds: [{score: 0, action: throttle, tier: slow}]\n" + (
        "tiers: {slow: {max_tokens: 5}}"
    )
    seen = Seen(FakeModel())
    app = Guardrail(seen, policy=Policy.from_string(policy(extra)), clock=clock)
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        reply = await http.post(
            "/v1/responses", headers={"authorization": "Bearer sk-shape"}, json=confused()
        )
    assert reply.status_code == 200
    output = reply.json()["usage"]["output_tokens"]
    assert output <= 5, f"the tier caps output at 5 tokens; the app wrote {output}"  # base: 147
    [decision] = seen.decisions
    assert decision.request is not None and decision.request.prompt == PROMPT  # base: ""
    assert decision.signals.get("reasoning_extraction", 0) > 0
