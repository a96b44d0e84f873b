"""One worker process of the concurrency test: 50 concurrent requests against a shared Redis.

Run as: python concurrency_worker.py REDIS_URL WORKERS
Prints how many requests were admitted and how many were limited.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

import httpx
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guardrail import Guardrail, Policy

from helpers import echo_app

POLICY = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
on_storage_error: fail_closed   # a storage error must show, not be absorbed
routes:
  - name: shared
    match: {path: /}
    limits:
      - {per: global, rate: 1/day, burst: 100}
"""


async def main(url: str, workers: int) -> str:
    app = Guardrail(
        echo_app(),
        policy=Policy.from_string(POLICY),
        storage=url,
        clock=lambda: 1_800_000_000.0,
        audit=f"file://{tempfile.mkdtemp()}/audit.jsonl",
    )
    await app.startup()
    barrier = aioredis.from_url(url.split("?")[0])  # guardrail's own URI options are not redis-py's
    # Start together: every process waits until all have connected.
    await barrier.incr("test:ready")
    while int(await barrier.get("test:ready") or 0) < workers:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    await barrier.aclose()
    transport = httpx.ASGITransport(app=app, client=(f"198.51.100.{os.getpid() % 250}", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://w") as http:
        responses = await asyncio.gather(*(http.get(f"/r{i}") for i in range(50)))
    await app.shutdown()
    statuses = [r.status_code for r in responses]
    return f"{statuses.count(200)} {statuses.count(429)}"


if __name__ == "__main__":
    print(asyncio.run(main(sys.argv[1], int(sys.argv[2]))))
