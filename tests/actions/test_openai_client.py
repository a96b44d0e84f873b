"""The OpenAI Python SDK against the example server: a challenged call raises
PermissionDeniedError saying what to do, without retrying; after solve_pow and the verify
endpoint, the same client's plain retry succeeds (its API key is cleared server-side)."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from examples.openai_server import create_app
from guardrail import Policy
from guardrail.client import solve_pow
from test_middleware_risk import ASK, HEADERS, policy

from .test_verify import CHALLENGES
from conftest import FakeClock


async def test_the_openai_sdk_is_challenged_then_cleared(tmp_path: Path, clock: FakeClock) -> None:
    app = create_app(
        policy=Policy.from_string(policy(4.0, extra=CHALLENGES)),
        clock=clock,
        sleep=clock.sleep,
        audit=f"file://{tmp_path / 'audit.jsonl'}",
    )
    sent: list[str] = []

    async def count(request: httpx.Request) -> None:
        sent.append(request.url.path)

    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("203.0.113.7", 40000)),
        event_hooks={"request": [count]},
    )
    client = openai.AsyncOpenAI(
        api_key="sk-test-1",
        base_url="http://testserver/v1",
        http_client=http,
        default_headers={"x-account-id": HEADERS["x-account-id"]},
    )

    async def ask(n: int) -> str | None:
        reply = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": ASK.format(n)}]
        )
        return reply.choices[0].message.content

    for n in range(3):
        assert await ask(n)
        clock.advance(30)
    sent.clear()
    with pytest.raises(openai.PermissionDeniedError) as raised:
        await ask(3)
    assert sent == ["/v1/chat/completions"]  # a 403: the SDK did not retry
    assert "challenge" in str(raised.value) and "proof of work" in str(raised.value)
    body = raised.value.response.json()
    verified = await http.post(
        "http://testserver/.guardrail/verify",
        json={"challenge_id": body["challenge"]["id"], "nonce": solve_pow(body)},
        headers=HEADERS,
    )
    assert verified.status_code == 200
    assert await ask(4)  # the same client, no clearance of its own: its key was cleared
    await http.aclose()
    await app.shutdown()
