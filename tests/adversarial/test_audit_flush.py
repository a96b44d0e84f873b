"""Issue 11, finding 11 (and the audit side of 3): one client floods the audit trail with refused
requests (random API keys, one IP, long paths and header values) to rotate earlier evidence away.

Fixed outcome: the trail grows by a bounded few bytes per refused request (one full record per
subject and interval, the rest counted as ``"repeated": N``), so an earlier record survives a
small ``rotate``, and the counts in the trail add up to the requests refused.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from guardrail import Guardrail
from guardrail.audit import summary, trail_files, verify
from guardrail.policy import Policy

from .conftest import served

POLICY = """
version: 1
mode: enforce
secret: env:GUARDRAIL_TEST_SECRET
identity:
  api_key: {header: authorization}
  account: {header: x-account-id}
routes:
  - name: inference
    match: {path: /v1/}
    limits:
      - {per: ip, rate: 1/hour, burst: 1}
audit:
  sink: file://%(path)s
  rotate: {max_bytes: 64KB, keep: 2}
"""

FLOOD = 300
MAX_BYTES = 64_000


async def test_refusal_flood_cannot_rotate_the_evidence_away(tmp_path: Path) -> None:
    trail = tmp_path / "audit.jsonl"

    async def ok(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    inner = Starlette(routes=[Route("/{rest:path}", ok)])
    guard = Guardrail(inner, policy=Policy.from_string(POLICY % {"path": trail}))
    refused = 0
    async with served(guard) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        # The admitted request, then the evidence: the first refusal, with a path to find it by.
        assert (await client.get("/v1/first")).status_code == 200
        assert (await client.get("/v1/evidence-of-the-attack")).status_code == 429
        refused += 1
        long_path = "/v1/" + "a" * 4000
        gate = asyncio.Semaphore(16)

        async def attack() -> int:
            async with gate:
                answer = await client.get(
                    long_path,
                    headers={
                        "authorization": f"Bearer {secrets.token_hex(16)}",
                        "x-account-id": secrets.token_hex(2000),
                        "user-agent": "x" * 4000,
                    },
                )
                return answer.status_code

        statuses = await asyncio.gather(*(attack() for _ in range(FLOOD)))
        assert set(statuses) == {429}
        refused += len(statuses)
    # uvicorn's lifespan shutdown has flushed the aggregator and closed the trail.
    files = trail_files(trail)
    size = sum(file.stat().st_size for file in files)
    records = [json.loads(line) for file in files for line in file.read_text().splitlines()]
    written = guard.audit.written
    mean_line = size / max(1, len(records))
    bytes_per_refusal = written * mean_line / refused  # rotated-away files included
    evidence = [r for r in records if r.get("path") == "/v1/evidence-of-the-attack"]
    counted = sum(r.get("repeated", 1) for r in records if r["action"] == "limit")
    longest = max(len(json.dumps(r).encode()) for r in records)
    figures = (
        f"{written} record(s) written for {refused} refusals, {bytes_per_refusal:.1f} bytes per "
        f"refused request, longest record {longest} bytes, {len(files)} file(s) on disk, "
        f"evidence kept: {bool(evidence)}, refusals counted in the trail: {counted}"
    )
    print(figures)
    assert evidence, f"the first refusal was rotated away: {figures}"
    assert bytes_per_refusal < 50, figures
    assert longest < 8_000, figures  # no record carries a 4 KB path and an 8 KB account whole
    assert counted == refused, figures
    assert guard.audit.lost == 0, figures
    ok_chain, report = verify(trail)
    assert ok_chain, report
    totals = summary(trail)
    assert totals["by_action"]["limit"] == refused, totals
