"""What the Redis deploy tests share (issue 12, items 10 and 11): a policy on a Redis that is
about to misbehave, guardrail served by real uvicorns, and a load that records each request's
start, latency and status.

(Not in conftest.py: other deploy tests keep fixtures of their own, and a module name that no
conftest shares can be imported by the test modules.)
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from adversarial.conftest import served
from guardrail import Guardrail, Policy

from helpers import CHAT, bearer, echo_app

#: Generous per-key limits for the load (it measures latency, not refusals), and a burst-4
#: route whose count tells where the limits are kept: two workers on one Redis admit exactly
#: 4 of a fresh key's requests; each on its local fallback admits 4, 8 in all.
BURST = 4


def policy(storage: str, on_storage_error: str = "fail_open", extra: str = "") -> Policy:
    return Policy.from_string(
        f"""
version: 1
storage: "{storage}"
on_storage_error: {on_storage_error}
secret: env:GUARDRAIL_TEST_SECRET
identity:
  api_key: {{header: authorization}}
routes:
  - name: exact
    match: {{path: "^/v1/exact$"}}
    limits:
      - {{per: api_key, rate: 1/hour, burst: {BURST}}}
  - name: inference
    match: {{path: "/v1/chat/completions$", methods: [POST]}}
    inspect: openai
    limits:
      - {{per: api_key, rate: 100000/minute, burst: 100000}}
thresholds: [{{score: 99, action: block}}]
audit: {{sample_allowed: 1.0}}
{extra}
"""
    )


@asynccontextmanager
async def workers(policies: Sequence[Policy], audit_dir: Path) -> AsyncIterator[list[str]]:
    """One real uvicorn per policy (each its own guardrail, as worker processes would have),
    each with its audit trail ``audit_dir/worker<N>.jsonl``; yields their base URLs."""
    async with AsyncExitStack() as stack:
        urls = []
        for index, each in enumerate(policies):
            guard = Guardrail(
                echo_app(), policy=each, audit=f"file://{audit_dir / f'worker{index}.jsonl'}"
            )
            urls.append(await stack.enter_async_context(served(guard)))
        yield urls


@dataclass(frozen=True, slots=True)
class Sent:
    start: float  # time.monotonic() when it was sent
    latency: float
    status: int


async def load(urls: Sequence[str], seconds: float, concurrency: int = 6) -> list[Sent]:
    """``concurrency`` clients, each sending chat completions back to back for ``seconds``,
    round robin over ``urls``, each request with one of 64 API keys."""
    sent: list[Sent] = []
    end = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency * len(urls))

    async def client(number: int, http: httpx.AsyncClient) -> None:
        count = 0
        while (start := time.monotonic()) < end:
            count += 1
            url = urls[(number + count) % len(urls)]
            try:
                response = await http.post(
                    f"{url}/v1/chat/completions",
                    json=CHAT,
                    headers=bearer(f"load-{(number * 7 + count) % 64}"),
                )
                status = response.status_code
            except httpx.HTTPError:
                status = 0  # no answer at all: counted against the server
            sent.append(Sent(start, time.monotonic() - start, status))

    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        await asyncio.gather(*(client(number, http) for number in range(concurrency)))
    return sent


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p95(values: Sequence[float]) -> float:
    if len(values) < 2:
        return max(values, default=float("nan"))
    return statistics.quantiles(values, n=20)[-1]


def audit(audit_dir: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(audit_dir.glob("worker*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line]
    return records
