"""Issue 14: one principal's evidence sent through different workers reaches the band it reaches
through one. Four real uvicorn processes, each its own guardrail, on one real Redis; a
principal asking for reasoning on every request, once all through the first worker and once
spread round robin over the four (as a load balancer does), requests paced a little apart so
that each worker has flushed in between. With the risk state in each process alone (memory
storage), the spread principal is four principals of a quarter of the evidence each: the same
run shows it served unmitigated."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx

from ._fleet_servers import uvicorn_cli

WORKERS = 4
REQUESTS = 10
# seconds between a principal's requests: each worker sees it every 0.48 s, after at least
# two reads of what the others wrote (every 200ms; writes every 20ms)
PACE = 0.12

APP = """\
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from guardrail import Guardrail

async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})

async def chat(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"ok": True})

routes = [Route("/healthz", healthz), Route("/v1/chat/completions", chat, methods=["POST"])]
app = Guardrail(Starlette(routes=routes), policy="guardrail.yaml")
"""

# Only reasoning_extraction counts (weight 3): 20 x 3 = 60 once four prompts have asked for
# reasoning, over the throttle band's 50.
POLICY = """\
version: 1
secret: env:GUARDRAIL_SECRET
storage: {storage}
identity:
  api_key: {{header: authorization}}
routes:
  - name: inference
    match: {{path: "/v1/chat/completions$", methods: [POST]}}
    inspect: openai
    limits:
      - {{per: api_key, rate: 600/minute, burst: 100}}
risk:
  share_every: 20ms
  signals:
{signals}thresholds:
  - {{score: 50, action: throttle, tier: slow}}
tiers:
  slow:
    header: true
audit:
  sink: "file://audit-{{pid}}.jsonl"
"""


def policy(storage: str) -> str:
    from guardrail.signals.catalog import SIGNALS

    signals = "".join(
        f"    {s.name}: {{weight: {3 if s.name == 'reasoning_extraction' else 0}}}\n"
        for s in SIGNALS
    )
    return POLICY.format(storage=storage, signals=signals)


@asynccontextmanager
async def fleet(tmp_path: Path, storage: str) -> AsyncIterator[list[str]]:
    """``WORKERS`` uvicorn processes, each on a port of its own; yields their URLs."""
    async with AsyncExitStack() as stack:
        directories = []
        for n in range(WORKERS):
            directory = tmp_path / f"worker{n}"
            directory.mkdir()
            (directory / "app.py").write_text(APP)
            (directory / "guardrail.yaml").write_text(policy(storage))
            directories.append(directory)
        started = await asyncio.gather(
            *(stack.enter_async_context(uvicorn_cli(d, "--no-access-log")) for d in directories)
        )
        yield [process.url for process in started]


async def first_mitigated(urls: list[str], key: str) -> int | None:
    """Sends ``REQUESTS`` requests for reasoning as ``key``, the n-th to ``urls[n % len]``;
    returns the index of the first one served in the slow tier (and checks the band holds)."""
    tiers = []
    async with httpx.AsyncClient(timeout=10) as http:
        for n in range(REQUESTS):
            response = await http.post(
                f"{urls[n % len(urls)]}/v1/chat/completions",
                json={
                    "model": "m",
                    "messages": [
                        {
                            "role": "user",
                            "content": f"Show your full reasoning step by step: question {n}",
                        }
                    ],
                },
                headers={"authorization": f"Bearer {key}"},
            )
            assert response.status_code == 200
            tiers.append(response.headers.get("guardrail-tier"))
            await asyncio.sleep(PACE)  # real worker processes flushing on their own
    first = next((n for n, tier in enumerate(tiers) if tier == "slow"), None)
    if first is not None:
        assert all(tier == "slow" for tier in tiers[first:]), tiers  # on every worker
    return first


async def test_a_principal_spread_over_four_workers_reaches_the_band_it_reaches_through_one(
    tmp_path: Path, redis_url: str
) -> None:
    async with fleet(tmp_path, redis_url) as urls:
        through_one = await first_mitigated(urls[:1], "sk-one-worker")
        spread = await first_mitigated(urls, "sk-spread")
    print(f"\nfirst mitigated: request {through_one} through one worker, {spread} spread over four")
    assert through_one is not None and spread is not None
    # a worker scores its first request of a principal on what it holds (that request): the
    # spread principal's first four requests are each a first
    assert through_one <= spread <= through_one + WORKERS - 1


async def test_with_the_risk_state_in_each_process_alone_it_is_not_seen_as_one(
    tmp_path: Path,
) -> None:
    async with fleet(tmp_path, "memory://") as urls:
        through_one = await first_mitigated(urls[:1], "sk-one-worker")
        spread = await first_mitigated(urls, "sk-spread")
    print(f"\nmemory: first mitigated {through_one} through one worker, {spread} spread over four")
    assert through_one is not None
    assert spread is None  # a quarter of its requests at each: under the band everywhere
