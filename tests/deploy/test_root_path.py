"""Issue 12 item 1: guardrail under a path prefix (``uvicorn --root-path``, Hypercorn's
``--root-path``, Starlette's ``Mount``, FastAPI's ``app.mount`` and ``root_path``) matches its
routes and its challenge prefix on the path the app routes on, and every URL it hands a client
carries the prefix, so a client behind the mount can follow it.

On the main of issue 11, under a prefix no route matched: 5 of 5 requests served with burst 2,
no audit record, ``/llm/.guardrail/*`` 404.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from guardrail.client import solve_pow

from ._root_path_servers import PREFIX, SETUPS, deployed
from helpers import audit_records

LIMITED = """
version: 1
routes:
  - name: chat
    match: {path: "^/v1/chat/completions$", methods: [POST]}
    limits:
      - {per: ip, rate: 1/hour, burst: 2}
audit: {aggregate: 0}
"""

CHALLENGED = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
routes:
  - name: api
    match: {path: "^/v1/"}
thresholds:
  - {score: 0, action: challenge}
challenges:
  pow: {difficulty: 4}
"""


async def _records(tmp_path: Path, count: int) -> list[dict[str, Any]]:
    # Written by the audit writer's task as records come: wait for them, not for a shutdown
    for _ in range(100):
        records = audit_records(tmp_path)
        if len(records) >= count:
            return records
        await asyncio.sleep(0.02)
    return audit_records(tmp_path)


@pytest.mark.parametrize("setup", SETUPS)
async def test_limits_and_audit_under_a_prefix(setup: str, tmp_path: Path) -> None:
    trail = tmp_path / "audit.jsonl"
    async with (
        deployed(setup, LIMITED, f"file://{trail}") as (url, to_server),
        httpx.AsyncClient(base_url=url) as http,
    ):
        statuses = [
            (await http.post(to_server(f"{PREFIX}/v1/chat/completions"), json={})).status_code
            for _ in range(5)
        ]
        records = await _records(tmp_path, 3)
    assert statuses.count(200) == 2, statuses  # burst 2: 2 of 5 served (base: 5 of 5)
    assert statuses.count(429) == 3
    assert [r["status"] for r in records] == [429, 429, 429]
    # the record names the path as the client sent it, the prefix included
    assert {r["path"] for r in records} == {f"{PREFIX}/v1/chat/completions"}
    assert {r["route"] for r in records} == {"chat"}


@pytest.mark.parametrize("setup", SETUPS)
async def test_a_challenge_is_followed_through_the_prefix(setup: str, tmp_path: Path) -> None:
    trail = tmp_path / "audit.jsonl"
    async with (
        deployed(setup, CHALLENGED, f"file://{trail}") as (url, to_server),
        httpx.AsyncClient(base_url=url) as http,
    ):
        # An API client: the 403's challenge URL is under the prefix
        refused = await http.post(to_server(f"{PREFIX}/v1/chat/completions"), json={})
        assert refused.status_code == 403
        challenge = refused.json()["challenge"]
        assert challenge["url"] == f"{PREFIX}/.guardrail/challenge/{challenge['id']}"
        page = await http.get(to_server(challenge["url"]), headers={"accept": "text/html"})
        assert page.status_code == 200, page.text  # base: 404
        assert f'action="{PREFIX}/.guardrail/verify"' in page.text
        assert f'src="{PREFIX}/.guardrail/pow.js"' in page.text
        script = await http.get(to_server(f"{PREFIX}/.guardrail/pow.js"))
        assert script.status_code == 200
        verified = await http.post(
            to_server(f"{PREFIX}/.guardrail/verify"),
            json={"challenge_id": challenge["id"], "nonce": solve_pow(refused.json())},
        )
        assert verified.status_code == 200, verified.text
        clearance = {"guardrail-clearance": verified.json()["clearance"]}
        served = await http.post(
            to_server(f"{PREFIX}/v1/chat/completions"), json={}, headers=clearance
        )
        assert served.status_code == 200 and served.text == "served"

        # A browser: the page sends it back where it was, under the prefix
        browser = {"accept": "text/html"}
        refused = await http.get(to_server(f"{PREFIX}/v1/page?x=1"), headers=browser)
        assert refused.status_code == 403
        back = re.search(r'name="redirect" value="([^"]*)"', refused.text)
        assert back is not None and back[1] == f"{PREFIX}/v1/page?x=1"
        challenge_id = re.search(r'name="challenge_id" value="([^"]*)"', refused.text)
        seed = re.search(r'data-seed="([^"]*)"', refused.text)
        assert challenge_id is not None and seed is not None
        nonce = solve_pow({"pow": {"algorithm": "sha256", "difficulty": 4, "seed": seed[1]}})
        answered = await http.post(
            to_server(f"{PREFIX}/.guardrail/verify"),
            data={"challenge_id": challenge_id[1], "nonce": nonce, "redirect": back[1]},
        )
        assert answered.status_code == 303
        assert answered.headers["location"] == f"{PREFIX}/v1/page?x=1"
