"""Metrics of a real uvicorn with two workers in prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR): a scrape of either worker shows the sum over both."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from ._audit_servers import server, stop

REQUESTS = 80
POLICY = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
routes:
  - name: pages
    match: {path: /}
    limits:
      - {per: ip, rate: 1/hour, burst: 100000}
metrics: {enabled: true}
"""
ALLOWED = ("guardrail_decisions_total", (("action", "allow"), ("route", "pages"), ("tier", "")))


async def _spread(url: str, count: int) -> None:
    """``count`` requests, each on a connection of its own, 20 at a time: both workers serve."""
    limit = asyncio.Semaphore(20)

    async def one(n: int) -> None:
        async with limit, httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.get(f"/page/{n}")).status_code == 200

    await asyncio.gather(*(one(n) for n in range(count)))


async def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_a_scrape_of_either_worker_sums_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "prometheus"
    shared.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    sink = f"file://{tmp_path}/audit-{{pid}}.jsonl"
    with server("uvicorn", policy, sink, "--workers", "2") as (url, process):
        asyncio.run(_spread(url, REQUESTS))
        # A worker hands its tallies to its file within metrics.FLUSH_AFTER (1s); a scrape
        # lands on one worker or the other, and once both flushed every one shows the total.
        deadline = time.monotonic() + 10
        while asyncio.run(_scrape(url)).get(ALLOWED) != REQUESTS:
            assert time.monotonic() < deadline, "the workers' counts never added up"
            time.sleep(0.2)  # real workers, a real timer: polled, bounded
        scrapes = [asyncio.run(_scrape(url)) for _ in range(6)]
        stop(process)
    assert {scrape[ALLOWED] for scrape in scrapes} == {REQUESTS}
    assert all(("guardrail_audit_queue_depth", ()) in scrape for scrape in scrapes)
    # both workers served: each one's file holds a share of the total
    files = sorted(shared.glob("counter_*.db"))
    assert len(files) == 2
    shares = []
    for file in files:
        families = MultiProcessCollector.merge([str(file)])
        decisions = next(f for f in families if f.name == "guardrail_decisions")
        shares.append(sum(s.value for s in decisions.samples if s.name.endswith("_total")))
    assert sum(shares) == REQUESTS and min(shares) > 0
    # a worker that shut down took its live gauges out of the sums
    assert not list(shared.glob("gauge_live*.db")), os.listdir(shared)
