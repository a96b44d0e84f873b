"""Issue 12 item 2: LiteLLM serves one chat endpoint at four paths; a policy naming one left
three unlimited and nothing said so (6 of 6 served with burst 3).

Against a stand-in for LiteLLM's proxy under a real uvicorn: ``unmatched: chat`` puts all four
under the chat route's limits (3 of 6 served), ``unmatched: refuse`` answers the other three
404, ``guardrail routes`` lists the three unguarded paths before serving, and the audit trail
counts the requests that went to paths no route names (``guardrail audit summary`` shows them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tests.adversarial.conftest import served

from guardrail import Guardrail, Policy
from guardrail.cli import main

from ._litellm_standin import app as litellm
from helpers import audit_records

ROOT = Path(__file__).resolve().parents[2]

POLICY = """
version: 1
routes:
  - name: health
    match: {path: "^/health/"}
    exempt: true
  - name: chat
    match: {path: "^/v1/chat/completions$", methods: [POST]}
    inspect: openai
    limits:
      - {per: ip, rate: 1/hour, burst: 3}
"""

# The four paths LiteLLM answers chat on, with a model where the path names one
PATHS = (
    "/v1/chat/completions",
    "/chat/completions",
    "/engines/gpt-4o/chat/completions",
    "/openai/deployments/gpt-4o/chat/completions",
)
ASK = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}


async def _ask_each(url: str, times: int) -> list[int]:
    async with httpx.AsyncClient(base_url=url) as http:
        return [
            (await http.post(PATHS[n % len(PATHS)], json=ASK)).status_code for n in range(times)
        ]


async def test_a_default_route_limits_all_four_paths(tmp_path: Path) -> None:
    policy = Policy.from_string(POLICY + "unmatched: chat\n")
    guarded = Guardrail(litellm, policy=policy, audit=f"file://{tmp_path / 'audit.jsonl'}")
    async with served(guarded) as url:
        statuses = await _ask_each(url, 6)
        async with httpx.AsyncClient(base_url=url) as http:
            health = await http.get("/health/liveliness")
    assert statuses == [200, 200, 200, 429, 429, 429]  # 3 of 6 with burst 3 (before: 6 of 6)
    assert health.status_code == 200  # an exempt route is still matched first
    refused = [r for r in audit_records(tmp_path) if r.get("status") == 429]
    assert {r["route"] for r in refused} == {"chat"}
    assert sum(r.get("repeated", 1) for r in refused) == 3


async def test_without_unmatched_the_gap_is_counted_in_the_trail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trail = tmp_path / "audit.jsonl"
    guarded = Guardrail(litellm, policy=Policy.from_string(POLICY), audit=f"file://{trail}")
    async with served(guarded) as url:
        statuses = await _ask_each(url, 8)
    # 2 of each path: /v1 within its burst, the rest unlimited (this is what pass means) ...
    assert statuses == [200] * 8
    # ... but counted: one record for the interval, naming each path (after lifespan shutdown)
    unmatched = [r for r in audit_records(tmp_path) if r.get("action") == "unmatched"]
    assert sum(r["repeated"] for r in unmatched) == 6  # base: no such record
    paths: dict[str, int] = {}
    for record in unmatched:
        for request, count in record["paths"].items():
            paths[request] = paths.get(request, 0) + count
    assert paths == {f"POST {path}": 2 for path in PATHS[1:]}
    assert {r["unmatched"] for r in unmatched} == {"pass"}

    assert main(["audit", "summary", "--json", str(trail)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["by_action"]["unmatched"] == 6
    assert {row["request"]: row["count"] for row in data["unmatched"]} == paths


async def test_refuse_answers_404_on_the_paths_no_route_names(tmp_path: Path) -> None:
    policy = Policy.from_string(POLICY + "unmatched: refuse\n")
    guarded = Guardrail(litellm, policy=policy, audit=f"file://{tmp_path / 'audit.jsonl'}")
    async with served(guarded) as url, httpx.AsyncClient(base_url=url) as http:
        answers = [await http.post(path, json=ASK) for path in PATHS]
        health = await http.get("/health/liveliness")
    assert [a.status_code for a in answers] == [200, 404, 404, 404]
    problem = answers[1]
    assert problem.headers["content-type"] == "application/problem+json"
    assert problem.json()["error"]["type"] == "invalid_request_error"
    assert health.status_code == 200


def _routes(policy: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """The real command, as an operator runs it from the project's directory."""
    return subprocess.run(
        [sys.executable, "-m", "guardrail", "routes", str(policy), *options],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"},
        check=False,
    )


APP = ("--app", "tests.deploy._litellm_standin:app")


def test_guardrail_routes_lists_the_three_unguarded_paths(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    listed = _routes(policy, *APP, "--strict", "--json")
    assert listed.returncode == 1, listed.stderr  # base: exit 2, no such command
    data = json.loads(listed.stdout)
    unguarded = [r["path"] for r in data["routes"] if r["how"] == "unguarded"]
    assert unguarded == [
        "/chat/completions",
        "/engines/{model}/chat/completions",
        "/openai/deployments/{model}/chat/completions",
        "/v1/models",
    ]
    assert data["unguarded_posts"] == 3
    text = _routes(policy, *APP).stdout
    assert "3 routes taking POST unguarded" in text

    policy.write_text(POLICY + "unmatched: chat\n")
    covered = _routes(policy, *APP, "--strict", "--json")
    assert covered.returncode == 0, covered.stdout
    rows = json.loads(covered.stdout)["routes"]
    posts = {r["path"]: r["policy_route"] for r in rows if r["method"] == "POST"}
    assert set(posts.values()) == {"chat"} and len(posts) == 4


def test_guardrail_routes_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # cli.main as the console script calls it: the same table
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("^/v1/chat/completions$", "^/v1/chat/completion$"))
    assert main(["routes", str(policy), *APP, "--strict"]) == 1
    out = capsys.readouterr().out
    assert "routes[1] chat: ^/v1/chat/completion$" in out  # the typo: it matches nothing
    assert "4 routes taking POST unguarded" in out
