"""Per-request cost of guardrail, in-process (ASGI calls, no network), against baselines measured
in the same run: the bare Starlette app and the same app under slowapi with one memory limit.

    make bench        # or: .venv/bin/python benchmarks/overhead.py [--requests 20000]

Targets: guardrail with three memory buckets (api_key, ip, subnet) adds at most half of what
slowapi adds (issue 2); with the risk engine on and a 1 KB chat prompt inspected, it adds at most
60 µs for returning identities (issue 3). The risk rows send diverse prompts: 1,000 identities
taking turns, each sending 16 different prompts in turn, past its first 32 (which are all
analysed; a returning identity's are sampled). Each app runs on a clock of its own at 10,000
requests a second: 10 a second from each identity, so its standing decides 9 requests in 10
(a standing holds for a second); the "rescored" row turns that off (identities sending less
than one a second), and the last row is every identity's first request.

Each target is measured in a process of its own, its batches interleaved with its baselines'
only (the limits with the bare app and slowapi; each risk row with the bare app and inspection
on the same chat bodies): one app per process, as in a worker. Sharing one process, what the
groups measured before left in the heap and the caches cost the later ones 10-15 µs a request.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message

from guardrail import Guardrail, Policy

from _apps import INSPECT_POLICY, POLICY, RISK_POLICY, bare_app, slowapi_app
from _requests import chat_bodies


def guardrail_app(storage: str | None = None, policy: str = POLICY) -> Guardrail:
    os.environ.setdefault("GUARDRAIL_BENCH_SECRET", "bench-secret")
    return Guardrail(
        bare_app(), policy=Policy.from_string(policy), storage=storage, clock=traffic(RATE)
    )


#: The request rate each guardrail app sees, on its own clock: how fast the risk rows'
#: identities come back must not depend on how long the other rows take.
RATE = 10_000.0


def traffic(rate: float) -> Callable[[], float]:
    """A clock for an app called once per request (guardrail reads it once): ``rate``
    requests a second."""
    ticks = itertools.count()
    start, step = time.time(), 1.0 / rate
    return lambda: start + next(ticks) * step


def chat_requests(count: int = 1000, rounds: int = 16) -> list[tuple[dict[str, Any], bytes]]:
    """``count`` identities (key, address), each sending ``rounds`` different 1 KB prompts of
    random words in turn: diverse prompts, as most traffic is."""
    identities = []
    for i in range(count):
        headers = [h for h in SCOPE["headers"] if h[0] not in (b"authorization", b"content-length")]
        headers.append((b"authorization", f"Bearer sk-bench-{i:04d}".encode()))
        address = f"10.{i // 62500 % 250}.{i // 250 % 250}.{i % 250 + 1}"
        identities.append((headers, address))
    out = []
    bodies = itertools.cycle(chat_bodies())
    for _ in range(rounds):
        for headers, address in identities:
            body = next(bodies)
            length = (b"content-length", str(len(body)).encode())
            scope = {**SCOPE, "headers": [*headers, length], "client": (address, 5)}
            out.append((scope, body))
    return out


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

    def __init__(self, app: ASGIApp, requests: list[tuple[dict[str, Any], bytes]] | None = None):
        self.app = app
        self.statuses: set[int] = set()
        self.requests = itertools.cycle(requests) if requests else None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.statuses.add(message["status"])

    async def batch(self, requests: int) -> float:
        """Mean µs per request over ``requests`` sequential requests."""
        app, send = self.app, self.send
        if self.requests is None:
            start = time.perf_counter_ns()
            for _ in range(requests):
                await app(dict(SCOPE), receive, send)
            return (time.perf_counter_ns() - start) / requests / 1000
        variants = [next(self.requests) for _ in range(requests)]
        start = time.perf_counter_ns()
        for scope, body in variants:
            message = {"type": "http.request", "body": body, "more_body": False}

            async def receive_body(message: Message = message) -> Message:
                return message

            await app(dict(scope), receive_body, send)
        return (time.perf_counter_ns() - start) / requests / 1000


BARE_CHAT = "bare Starlette app, 1 KB chat bodies"
INSPECT = "  + guardrail, inspection, no risk"
RISK = "  + guardrail, risk, 1,000 ids, 10/s each"
RISK_RESCORED = "  + risk, same ids, each request rescored"
RISK_NEW = "  + guardrail, risk, new id each time"
RISK_REDIS = "  + risk engine, Redis"
LIMITS = "guardrail, 3 memory buckets"
LIMITS_METRICS = "guardrail, 3 memory buckets, metrics on"
RISK_METRICS = "  + guardrail, risk, 10/s each, metrics on"
#: Issue 16: Prometheus metrics (decisions counted, scores observed) add at most 3 µs a request.
METRICS = "metrics: {enabled: true}\n"
#: Requests per identity before the risk rows are measured: past its first 32 prompts (all
#: analysed), an identity is a returning one.
RETURNING_AFTER = 40


async def measure(
    servers: dict[str, Server], requests: int, batches: int, returning: tuple[str, ...] = ()
) -> dict[str, float]:
    """Median µs per request of each server. Batches are interleaved so that drift (GC, CPU
    frequency, a noisy neighbour) hits every configuration alike."""
    for name, server in servers.items():
        # warm-up: caches, lazily started resources, and identities that have a history
        await server.batch(1000 * RETURNING_AFTER if name in returning else 1000)
    per_batch = max(1, requests // batches)
    samples: dict[str, list[float]] = {name: [] for name in servers}
    gc.collect()
    for _ in range(batches):
        for name, server in servers.items():
            samples[name].append(await server.batch(per_batch))
    for name, server in servers.items():
        if server.statuses != {200}:
            raise SystemExit(f"{name} answered {sorted(server.statuses)}, expected only 200")
        if isinstance(server.app, Guardrail):
            await server.app.shutdown()
    return {name: statistics.median(values) for name, values in samples.items()}


def rescored(chats: list[tuple[dict[str, Any], bytes]]) -> Server:
    """Identities sending less than a request a second are rescored on every request (a
    standing decides for a second at most): the engine's full cost, analysis sampled alike."""
    app = guardrail_app(policy=RISK_POLICY)
    assert app.risk is not None
    app.risk.rescore_after = 0.0
    return Server(app, chats)


async def group(name: str, requests: int, batches: int, redis: str | None) -> dict[str, float]:
    """One group of configurations, measured together: the limits against the bare app and
    slowapi, or one risk row against the bare app and inspection on the same chat bodies."""
    if name == "limits":
        builders: dict[str, Callable[[], ASGIApp]] = {
            "bare Starlette app": bare_app,
            "slowapi, 1 memory limit": slowapi_app,
            LIMITS: guardrail_app,
            LIMITS_METRICS: lambda: guardrail_app(policy=POLICY + METRICS),
        }
        if redis:  # a round trip to a real Redis per request: informative, not a target
            builders["guardrail, 3 Redis buckets"] = lambda: guardrail_app(redis)
        servers = {row: Server(build()) for row, build in builders.items()}
        return await measure(servers, requests, batches)
    chats = chat_requests()
    if name == RISK_NEW:
        row = Server(guardrail_app(policy=RISK_POLICY), chat_requests(requests + 2000, 1))
    elif name == RISK_RESCORED:
        row = rescored(chats)
    else:  # RISK, or RISK_REDIS (two round trips: informative)
        row = Server(guardrail_app(redis if name == RISK_REDIS else None, RISK_POLICY), chats)
    servers = {
        BARE_CHAT: Server(bare_app(), chats),
        INSPECT: Server(guardrail_app(policy=INSPECT_POLICY), chats),
        name: row,
    }
    if name == RISK:  # the same row with metrics on: a score observed on every request
        servers[RISK_METRICS] = Server(guardrail_app(policy=RISK_POLICY + METRICS), chats)
    return await measure(servers, requests, batches, returning=(name, RISK_METRICS))


def run_group(name: str, args: argparse.Namespace) -> dict[str, float]:
    """Each group in a process of its own: what one measured leaves in the heap (and the
    caches) cost the next ~10 µs a request when they shared one."""
    command = [sys.executable, __file__, "--group", name]
    command += ["--requests", str(args.requests), "--batches", str(args.batches)]
    if args.redis:
        command += ["--redis", args.redis]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    rows: dict[str, float] = json.loads(out)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=120000)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--redis", metavar="URL", help="also measure the Redis backend at URL")
    parser.add_argument("--group", help=argparse.SUPPRESS)  # a child process: one group
    args = parser.parse_args()
    if args.group:
        rows = asyncio.run(group(args.group, args.requests, args.batches, args.redis))
        print(json.dumps(rows))
        return

    limits = run_group("limits", args)
    bare = limits["bare Starlette app"]
    print(f"{'configuration':40} {'µs/request':>11} {'added µs':>9}")
    for name, value in limits.items():
        print(f"{name:40} {value:11.1f} {value - bare:9.1f}", flush=True)
    added: dict[str, float] = {}
    risk_rows = [RISK, RISK_RESCORED, RISK_NEW] + ([RISK_REDIS] if args.redis else [])
    for name in risk_rows:
        risk = run_group(name, args)
        chat = risk[BARE_CHAT]
        if not added:
            for base in (BARE_CHAT, INSPECT):
                print(f"{base:40} {risk[base]:11.1f} {risk[base] - chat:9.1f}")
        added[name] = risk[name] - chat
        print(f"{name:40} {risk[name]:11.1f} {added[name]:9.1f}", flush=True)
        if RISK_METRICS in risk:
            added[RISK_METRICS] = risk[RISK_METRICS] - chat
            print(f"{RISK_METRICS:40} {risk[RISK_METRICS]:11.1f} {added[RISK_METRICS]:9.1f}")
    slow_added = limits["slowapi, 1 memory limit"] - bare
    guard_added = limits[LIMITS] - bare
    ratio = guard_added / slow_added if slow_added > 0 else float("inf")
    print(f"\nguardrail adds {ratio:.2f}x what slowapi adds (target <= 0.50)")
    print(
        f"with the risk engine and a 1 KB prompt inspected, guardrail adds {added[RISK]:.1f} µs "
        f"over the bare app on the same requests for returning identities (target <= 60); "
        f"{added[RISK_RESCORED]:.1f} µs when each request is rescored, "
        f"{added[RISK_NEW]:.1f} µs when each is a new identity's"
    )
    print(
        f"metrics on add {limits[LIMITS_METRICS] - limits[LIMITS]:.1f} µs a request to the "
        f"memory buckets, {added[RISK_METRICS] - added[RISK]:.1f} µs with the risk engine "
        "(target <= 3)"
    )


if __name__ == "__main__":
    main()
