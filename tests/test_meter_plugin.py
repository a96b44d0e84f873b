"""A meter for another protocol, named in the policy: examples/tgi_meter.py gives TGI's
``/generate`` API token budgets (settled from its ``details``) and tier caps."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from guardrail import Guardrail, Policy, PolicyError

from conftest import FakeClock
from helpers import audit_records, client

POLICY = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
audit: {{sample_allowed: 1.0}}
routes:
  - name: generate
    match: {{path: "^/generate$", methods: [POST]}}
    inspect: {inspect}
    headers: true
    limits:
      - {{per: ip, rate: 1000/day, cost: tokens}}
{extra}
"""


def tgi_app() -> tuple[Starlette, list[dict[str, object]]]:
    seen: list[dict[str, object]] = []

    async def generate(request: Request) -> Response:
        body = await request.json()
        seen.append(body)
        wanted = body.get("parameters", {}).get("max_new_tokens", 20)
        text = " word" * wanted
        details = {"finish_reason": "length", "generated_tokens": wanted}
        return JSONResponse({"generated_text": text, "details": details})

    return Starlette(routes=[Route("/generate", generate, methods=["POST"])]), seen


def guarded(tmp_path: Path, clock: FakeClock, app: Starlette, extra: str = "") -> Guardrail:
    text = POLICY.format(inspect="examples.tgi_meter:TGI", extra=extra)
    return Guardrail(
        app,
        policy=Policy.from_string(text),
        clock=clock,
        sleep=clock.sleep,
        audit=f"file://{tmp_path / 'audit.jsonl'}",
    )


async def test_a_named_meter_reserves_and_settles_another_protocol(
    tmp_path: Path, clock: FakeClock
) -> None:
    app, _ = tgi_app()
    guard = guarded(tmp_path, clock, app)
    body = {"inputs": "abcdefgh", "parameters": {"max_new_tokens": 30}}
    async with client(guard) as http:
        first = await http.post("/generate", json=body)
        second = await http.post("/generate", json=body)
    await guard.shutdown()
    assert first.status_code == 200
    assert first.headers["x-ratelimit-remaining-tokens"] == str(1000 - (2 + 30))
    # the first was settled to its details (30 generated) before the second reserved 32
    assert second.headers["x-ratelimit-remaining-tokens"] == str(1000 - 30 - 32)
    assert [r["tokens"] for r in audit_records(tmp_path)] == [
        {"reserved": 32, "used": 30},
        {"reserved": 32, "used": 30},
    ]


async def test_a_named_meter_caps_for_a_tier(tmp_path: Path, clock: FakeClock) -> None:
    app, seen = tgi_app()
    extra = """thresholds:
  - {score: 0, action: throttle, tier: slow}
tiers:
  slow: {max_tokens: 8, strip: [n]}
"""
    guard = guarded(tmp_path, clock, app, extra)
    async with client(guard) as http:
        await http.post("/generate", json={"inputs": "x", "parameters": {"best_of": 4}})
    await guard.shutdown()
    assert seen == [{"inputs": "x", "parameters": {"max_new_tokens": 8}}]


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("examples.tgi_meter:NOPE", "an importable 'module:attribute' (AttributeError"),
        ("json:loads", "a meter: an object with the methods prompt, ask, cap, strip, usage"),
        ("grpc", "openai (the shape from the request's path), openai.chat"),
    ],
)
def test_a_meter_that_is_not_one_is_refused_at_load(ref: str, expected: str) -> None:
    with pytest.raises(PolicyError) as refused:
        Policy.from_string(POLICY.format(inspect=ref, extra=""))
    [issue] = refused.value.issues
    assert issue.path == "routes[0].inspect" and issue.value == ref
    assert issue.expected.startswith(expected)
