"""Issue 12, item 10: a Redis Cluster master killed (SIGKILL) under load. A real 3-master
cluster (no replicas: its slots stay down), a real uvicorn, chat completions from 64 API keys
spread over every master. No request may end in a 500 (on 0.1, 0-3 of ~400 did: redis-py's
``AttributeError: 'NoneType' object has no attribute 'writelines'``, a connection that another
task tore down as the cluster went down, escaped the StorageError mapping), ``fail_closed``
answers only its intended 503s, latency stays bounded (on 0.1, p50 0.1-0.3 s here, and every
request paid for the cluster's slot-map refreshes), and once the breaker is open the surviving
masters see probes only, not commands (and refreshes) for every request (on 0.1: 140-810/s)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ._misbehaving_redis import load, median, p95, policy, workers
from redis_servers import Cluster

AFTER = 8.0  # seconds of load after the kill
SETTLED = 3.0  # cluster-node-timeout (2 s) and some gossip


async def commands(cluster: Cluster) -> int:
    """Commands the masters still alive have processed so far."""
    total = 0
    for node in cluster.nodes[1:]:
        client = aioredis.Redis(port=node.port)
        try:
            total += int((await client.info("stats"))["total_commands_processed"])
        finally:
            await client.aclose()
    return total


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of its own: this test kills one of its masters."""
    started = Cluster(tmp_path / "cluster")
    yield started
    started.stop()


@pytest.mark.parametrize("on_storage_error", ["fail_open", "fail_closed"])
async def test_killing_a_cluster_master_under_load(
    cluster: Cluster, tmp_path: Path, on_storage_error: str
) -> None:
    async with workers([policy(cluster.url, on_storage_error)], tmp_path) as urls:
        loading = asyncio.create_task(load(urls, 1.0 + AFTER))
        await asyncio.sleep(1.0)
        killed_at = time.monotonic()
        cluster.nodes[0].process.kill()
        await asyncio.sleep(SETTLED)  # the cluster has marked the master failed by then
        counted_from, commands_from = time.monotonic(), await commands(cluster)
        sent = await loading
        calls = (await commands(cluster) - commands_from) / (time.monotonic() - counted_from)

    before = [s for s in sent if s.start + s.latency < killed_at]  # answered before the kill
    after = [s for s in sent if s.start >= killed_at]
    latencies = [s.latency for s in after]
    statuses = Counter(s.status for s in after)
    print(
        f"\n{on_storage_error}: {len(after)} requests in the {AFTER:.0f} s after the kill: "
        f"{dict(statuses)}; "
        f"p50 {median(latencies) * 1000:.0f} ms, p95 {p95(latencies) * 1000:.0f} ms; "
        f"{calls:.0f} commands/s on the live masters from {SETTLED:.0f} s after the kill"
    )
    intended = {200} if on_storage_error == "fail_open" else {200, 503}
    # healthy (a busy CI machine may time out a connect now and then: fail_closed says 503)
    assert {s.status for s in before} <= intended
    assert sum(s.status == 200 for s in before) >= 0.9 * len(before)
    assert set(statuses) <= intended  # no 500, no request left unanswered
    assert median(latencies) < 0.150
    assert p95(latencies) < 0.500
    assert calls < 50  # the breaker is open: probes only, not a call (or a refresh) a request
