"""The example OpenAI-compatible server behind guardrail, and the demo `make demo` runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples import demo
from examples.openai_server import create_app
from guardrail import Policy

from helpers import client

EXAMPLE_POLICY = Path(__file__).parent.parent / "examples" / "policy.yaml"


def test_example_policy_validates():
    policy = Policy.from_yaml(EXAMPLE_POLICY)
    assert [r.name for r in policy.routes] == ["health", "inference", "default"]


@pytest.fixture
def example_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAIL_SECRET", "example-test-secret")


async def test_example_server_answers_json_with_usage(tmp_path: Path, clock, example_secret):
    app = create_app(clock=clock, sleep=clock.sleep, audit=f"file://{tmp_path / 'audit.jsonl'}")
    async with client(app, peer="127.0.0.1") as http:
        response = await http.post(
            "/v1/chat/completions",
            headers={"authorization": "Bearer sk-ex", "x-forwarded-for": "198.51.100.9"},
            json={
                "model": "fake-1",
                "messages": [{"role": "user", "content": "why is the sky blue"}],
            },
        )
    await app.shutdown()
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["usage"]["completion_tokens"] > 0
    assert "sky" in body["choices"][0]["message"]["content"]
    assert response.headers["x-ratelimit-limit-requests"] == "20"
    # the example's token budget: 500,000 at once a key, reserved and shown before the body
    assert response.headers["x-ratelimit-limit-tokens"] == "500000"
    assert int(response.headers["x-ratelimit-remaining-tokens"]) < 500000


async def test_example_server_streams_sse_through_guardrail(tmp_path: Path, clock, example_secret):
    app = create_app(clock=clock, sleep=clock.sleep, audit=f"file://{tmp_path / 'audit.jsonl'}")
    async with client(app, peer="127.0.0.1") as http:
        response = await http.post(
            "/v1/chat/completions",
            headers={"authorization": "Bearer sk-ex"},
            json={
                "model": "fake-1",
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": "hello"}],
            },
        )
    await app.shutdown()
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["usage"]["total_tokens"] > 0
    assert "".join(
        c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]
    ).startswith("Here is an answer")


def test_demo_limits_the_scraper_and_not_the_normal_client(
    capsys: pytest.CaptureFixture[str], example_secret
):
    assert demo.main() == 0
    out = capsys.readouterr().out
    assert "the scraper was limited and the normal client was not" in out
    assert "by action" in out and "limit" in out
