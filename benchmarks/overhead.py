"""Per-request cost of guardrail, in-process (ASGI calls, no network), against baselines measured
in the same run: the bare Starlette app and the same app under slowapi with one memory limit.

    make bench        # or: .venv/bin/python benchmarks/overhead.py [--requests 20000]

Target (issue 2): guardrail with three memory buckets (api_key, ip, subnet) adds at most half of
what slowapi adds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from slowapi import Limiter
from slowapi.util import get_remote_address
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message

from guardrail import Guardrail, Policy

POLICY = """
version: 1
secret: env:GUARDRAIL_BENCH_SECRET
audit: {sink: "stdout://"}
routes:
  - name: inference
    match: {path: /v1/}
    limits:
      - {per: api_key, rate: 1000000000/second}
      - {per: ip, rate: 1000000000/second}
      - {per: subnet, rate: 1000000000/second}
"""


def bare_app() -> Starlette:
    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/v1/chat/completions", endpoint, methods=["POST"])])


def slowapi_app() -> Starlette:
    limiter = Limiter(key_func=get_remote_address, storage_uri="memory://")

    @limiter.limit("1000000000/second")
    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/v1/chat/completions", endpoint, methods=["POST"])])
    app.state.limiter = limiter
    return app


def guardrail_app(storage: str | None = None) -> Guardrail:
    os.environ.setdefault("GUARDRAIL_BENCH_SECRET", "bench-secret")
    return Guardrail(bare_app(), policy=Policy.from_string(POLICY), storage=storage)


SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/v1/chat/completions",
    "raw_path": b"/v1/chat/completions",
    "query_string": b"",
    "root_path": "",
    "server": ("127.0.0.1", 8000),
    "client": ("203.0.113.7", 50123),
    "headers": [
        (b"host", b"bench"),
        (b"authorization", b"Bearer sk-bench-0001"),
        (b"content-type", b"application/json"),
        (b"content-length", b"2"),
    ],
}


async def receive() -> Message:
    return {"type": "http.request", "body": b"{}", "more_body": False}


class Server:
    """Calls one app the way a server would, and checks every answer was a 200."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.statuses: set[int] = set()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.statuses.add(message["status"])

    async def batch(self, requests: int) -> float:
        """Mean µs per request over ``requests`` sequential requests."""
        app, send = self.app, self.send
        start = time.perf_counter_ns()
        for _ in range(requests):
            await app(dict(SCOPE), receive, send)
        return (time.perf_counter_ns() - start) / requests / 1000


async def main_async(requests: int, batches: int, redis: str | None) -> None:
    builders: dict[str, Callable[[], ASGIApp]] = {
        "bare Starlette app": bare_app,
        "slowapi, 1 memory limit": slowapi_app,
        "guardrail, 3 memory buckets": guardrail_app,
    }
    if redis:  # one round trip to a real Redis per request: informative, not part of the target
        builders["guardrail, 3 Redis buckets"] = lambda: guardrail_app(redis)
    servers = {name: Server(build()) for name, build in builders.items()}
    for server in servers.values():
        await server.batch(1000)  # warm-up: caches, lazily started resources
    # Batches are interleaved so that drift (GC, CPU frequency, a noisy neighbour) hits every
    # configuration alike; the median batch of each is reported.
    per_batch = max(1, requests // batches)
    samples: dict[str, list[float]] = {name: [] for name in servers}
    gc.collect()
    for _ in range(batches):
        for name, server in servers.items():
            samples[name].append(await server.batch(per_batch))
    for name, server in servers.items():
        if server.statuses != {200}:
            raise SystemExit(f"{name} answered {sorted(server.statuses)}, expected only 200")
    rows = {name: statistics.median(values) for name, values in samples.items()}
    bare = rows["bare Starlette app"]
    slow_added = rows["slowapi, 1 memory limit"] - bare
    print(f"{'configuration':32} {'µs/request':>11} {'added µs':>9}")
    for name, value in rows.items():
        print(f"{name:32} {value:11.1f} {value - bare:9.1f}")
    guard_added = rows["guardrail, 3 memory buckets"] - bare
    ratio = guard_added / slow_added if slow_added > 0 else float("inf")
    print(f"\nguardrail adds {ratio:.2f}x what slowapi adds (target <= 0.50)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=120000)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--redis", metavar="URL", help="also measure the Redis backend at URL")
    args = parser.parse_args()
    asyncio.run(main_async(args.requests, args.batches, args.redis))


if __name__ == "__main__":
    main()
