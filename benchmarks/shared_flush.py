"""What sharing the risk state through Redis costs a request, counted rather than timed under
load (issue 14): the worker's flushes and Redis's scripts, which load.py's four-worker row
shows only as a lower rate.

    .venv/bin/python benchmarks/shared_flush.py [--instances 4] [--rate 4000] [--requests 20000]
        [--keys 100] [--redis URL]

``--instances`` guardrail instances with the shared risk engine (load.py's ``risk_redis``
policy) on one real Redis, sent load.py's request stream (``--keys`` API keys taking turns,
1 KB chat bodies), each request to one of them at random (as a load balancer spreads them), at
``--rate`` requests a second of a simulated clock, each instance flushed every ``share_every``
of it (as the simulator does: ``simulate/runner.py``). The first fifth of the requests warms
up. Printed, each over the requests measured:

- the worker's CPU a request (process time) in the requests and in the flushes;
- Redis's CPU a request by the server's own count (INFO commandstats: microseconds spent in
  each command, a script's calls inside it included), and the limits' part of it, from a run
  of the same requests through the limits alone;
- the commands the flushes' scripts ran a request, by name: a count, not a time, so it does
  not move with the machine's load.

A Redis is started on a free port unless ``--redis URL`` (a scratch one: it is flushed).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

os.environ.setdefault("GUARDRAIL_BENCH_SECRET", "bench-secret")
logging.disable(logging.WARNING)

from instructions import scope  # noqa: E402
from load import Processes, Redis  # noqa: E402
from risk_paths import Clock  # noqa: E402

from guardrail import Guardrail, Policy  # noqa: E402
from guardrail.backends.risk_shared import SharedRiskStore  # noqa: E402

import _apps  # noqa: E402  (benchmarks/ is on sys.path when run)
from _requests import stream  # noqa: E402


async def commandstats(client: aioredis.Redis) -> dict[str, tuple[int, int]]:
    """Calls and microseconds by command, the benchmark's own INFO and CONFIG left out."""
    stats = await client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
        for name, v in stats.items()
        if "config" not in name and "info" not in name
    }


async def run(args: argparse.Namespace, url: str, risk: bool = True) -> dict[str, Any]:
    """The measures above; without ``risk``, the same requests through the limits alone
    (``_apps.INSPECT_POLICY``: the Redis a request costs without the risk engine)."""
    client = aioredis.from_url(url)
    await client.flushall()
    clock = Clock()
    policy = Policy.from_string(_apps.RISK_POLICY if risk else _apps.INSPECT_POLICY)
    guards = [
        Guardrail(_apps.bare_app(read_body=True), policy=policy, clock=clock, storage=url)
        for _ in range(args.instances)
    ]
    stores = []
    for guard in guards if risk else ():
        store = guard.risk.store if guard.risk is not None else None
        if not isinstance(store, SharedRiskStore):
            raise SystemExit("the policy did not give the shared risk engine")
        store.autoflush = False
        stores.append(store)
    for guard in guards:
        await guard.startup()
    requests = stream(args.keys)
    due = [clock.now] * len(stores)
    pick = random.Random(1).randrange  # not in turn: 100 keys in turn over 4 would each stay on one

    async def sent(message: Any) -> None:
        pass

    async def send(first: int, count: int) -> tuple[float, float]:
        in_requests = in_flushes = 0.0
        for i in range(first, first + count):
            clock.now += 1.0 / args.rate
            for index, store in enumerate(stores):
                if clock.now >= due[index]:
                    due[index] = clock.now + store.interval
                    started = time.process_time()
                    await store.flush()
                    in_flushes += time.process_time() - started
            auth, body = requests[i % len(requests)]
            messages = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive(messages: list[dict[str, Any]] = messages) -> Any:
                return messages.pop() if messages else {"type": "http.disconnect"}

            started = time.process_time()
            await guards[pick(len(guards))](scope(auth), receive, sent)
            in_requests += time.process_time() - started
        return in_requests, in_flushes

    warm = args.requests // 5
    await send(0, warm)
    before = await commandstats(client)
    in_requests, in_flushes = await send(warm, args.requests - warm)
    after = await commandstats(client)
    for guard in guards:
        await guard.shutdown()
    await client.aclose()
    measured = args.requests - warm
    delta = {
        name: (calls - before.get(name, (0, 0))[0], usec - before.get(name, (0, 0))[1])
        for name, (calls, usec) in after.items()
    }
    # The limits' script runs GET on its buckets, nothing else does: its EVALSHA calls are
    # one a request, the rest are the flushes'.
    evalsha_calls, evalsha_usec = delta.pop("evalsha", (0, 0))
    inside = {name: value for name, value in delta.items() if value[0]}
    flush_calls = evalsha_calls - measured
    return {
        "instances": args.instances,
        "rate": args.rate,
        "requests": measured,
        "worker_us": {
            "requests": in_requests / measured * 1e6,
            "flushes": in_flushes / measured * 1e6,
        },
        "redis_us": evalsha_usec / measured,
        "flush_calls": flush_calls,
        "commands_per_request": {
            name: calls / measured for name, (calls, _) in sorted(inside.items())
        },
        "commands_us": {name: usec / measured for name, (_, usec) in sorted(inside.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--rate", type=float, default=4000.0, help="requests a second, in all")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--redis", metavar="URL", help="a scratch Redis (it is flushed)")
    args = parser.parse_args()
    processes = Processes()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            url = args.redis or Redis(processes, Path(workdir)).url
            limits = asyncio.run(run(args, url, risk=False))
            result = asyncio.run(run(args, url))
    finally:
        processes.stop_all()
    per = result["commands_per_request"]
    print(
        f"{result['instances']} instances, {result['rate']:.0f} requests/s (simulated), "
        f"{result['requests']} requests measured, {result['flush_calls']} flush calls"
    )
    worker = result["worker_us"]
    print(
        f"worker CPU a request: {worker['requests']:.1f} µs in requests, "
        f"{worker['flushes']:.1f} µs in flushes"
    )
    print(
        f"Redis CPU a request, scripts: {result['redis_us']:.1f} µs; the limits alone "
        f"{limits['redis_us']:.1f} µs (a run without the risk engine): the flushes "
        f"{result['redis_us'] - limits['redis_us']:.1f}"
    )
    print(f"commands run inside scripts a request: {sum(per.values()):.2f}")
    for name, count in sorted(per.items(), key=lambda item: -item[1]):
        print(f"  {name:14s} {count:6.2f}  {result['commands_us'][name]:6.2f} µs")


if __name__ == "__main__":
    sys.exit(main())
