"""Issue 12, item 11: a paused Redis must not cost every request its timeouts. Two real
uvicorn workers share one real redis-server, under load, while it is paused for 3 s
(``CLIENT PAUSE 3000 ALL``). With ``on_storage_error: fail_open`` the breaker opens after a few
failures: requests started after the pause's first second are decided on the local fallback
at once (median < 150 ms; on 0.1 every request waited out two timeouts, ~0.5 s). After the
pause the breaker closes within a second, and limits are exact again within 2 s: a fresh key's
burst-4 bucket, hit alternately on both workers, admits 4 (on the fallbacks it admits 8)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from ._misbehaving_redis import BURST, audit, load, median, p95, policy, workers
from helpers import bearer

PAUSE = 3.0


async def test_a_paused_redis_is_skipped_and_limits_are_exact_soon_after(
    redis_url: str, tmp_path: Path
) -> None:
    async with workers([policy(redis_url), policy(redis_url)], tmp_path) as urls:
        loading = asyncio.create_task(load(urls, 1.0 + PAUSE + 2.5))
        await asyncio.sleep(1.0)  # the load runs on a healthy Redis first
        admin = aioredis.from_url(redis_url)
        paused_at = time.monotonic()
        try:
            await admin.execute_command("CLIENT", "PAUSE", int(PAUSE * 1000), "ALL")
        finally:
            await admin.aclose()
        await asyncio.sleep(paused_at + PAUSE - time.monotonic())  # the server's own pause
        resumed = time.monotonic()
        rounds: list[tuple[float, int]] = []  # (started after the pause, admitted of 2*BURST)
        async with httpx.AsyncClient(timeout=30) as http:
            while (started := time.monotonic()) < resumed + 2.5:
                key = f"exact-{len(rounds)}"
                admitted = 0
                for index in range(2 * BURST):
                    answer = await http.get(f"{urls[index % 2]}/v1/exact", headers=bearer(key))
                    admitted += answer.status_code == 200
                rounds.append((started - resumed, admitted))
                await asyncio.sleep(0.1)
        sent = await loading

    during = [s.latency for s in sent if paused_at + 1.0 <= s.start < paused_at + PAUSE]
    inexact = [at for at, admitted in rounds if admitted != BURST]
    exact_after = max((at for at, admitted in rounds if admitted != BURST), default=-1.0)
    exact_from = min((at for at, _ in rounds if at > exact_after), default=float("inf"))
    print(
        f"\npaused {PAUSE:.0f} s: {len(during)} requests after its first second, "
        f"median {median(during) * 1000:.0f} ms, p95 {p95(during) * 1000:.0f} ms; "
        f"limits exact from {exact_from:.2f} s after the pause "
        f"(rounds admitting other than {BURST}: {len(inexact)} of {len(rounds)})"
    )
    assert [s.status for s in sent if s.status != 200] == []  # fail_open: all served
    assert len(during) >= 20
    assert median(during) < 0.150
    assert exact_from <= 2.0
    records = audit(tmp_path)
    # decisions made while Redis was skipped are marked as made on the fallback
    assert sum(1 for r in records if r.get("degraded")) >= len(during)
    assert not any(r.get("storage_error") for r in records)
