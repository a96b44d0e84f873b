"""Memory of the risk engine's in-process state: bounded under a flood of new addresses.

    .venv/bin/python benchmarks/risk_memory.py [--ips 1000000] [--max-subjects 100000]

Part 1 sends one request with a 1 KB prompt from each of ``--ips`` distinct addresses through
the risk engine (the memory store, as the middleware builds it) and reports what is tracked and
the process's resident memory per tracked principal: the LRU holds it at ``max_subjects``.
Part 2 measures one principal exactly (tracemalloc over 5,000 principals, each with a full
ring of prompt sketches): the issue's budget is 1 KiB.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import time
import tracemalloc
from ipaddress import IPv4Address

from guardrail import Policy
from guardrail.backends import risk_engine, storage_from_uri
from guardrail.backends.risk_memory import MemoryRiskStore
from guardrail.identity import Subject
from guardrail.inspection import parse_request
from guardrail.limits import CompiledRoute, compile_route
from guardrail.signals.engine import RiskEngine

POLICY = """
version: 1
max_subjects: {max_subjects}
routes:
  - name: inference
    match: {{path: /v1/}}
    inspect: openai
    limits: [{{per: ip, rate: 60/minute}}]
thresholds:
  - {{score: 100, action: block}}
"""


#: Distinct prompts in the flood: each adds template buckets, up to max_subjects of them.
PROMPTS = 4096


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def prompts(count: int) -> list[bytes]:
    rng = random.Random(1)
    words = [
        "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9))) for _ in range(3000)
    ]
    return [
        json.dumps(
            {"messages": [{"role": "user", "content": " ".join(rng.choices(words, k=160))[:1024]}]}
        ).encode()
        for _ in range(count)
    ]


def engine(max_subjects: int) -> tuple[RiskEngine, CompiledRoute]:
    policy = Policy.from_string(POLICY.format(max_subjects=max_subjects))
    return risk_engine(policy, storage_from_uri("memory://"), False), compile_route(
        policy.routes[0]
    )


async def flood(ips: int, max_subjects: int) -> None:
    risk, route = engine(max_subjects)
    bodies = [parse_request(body) for body in prompts(PROMPTS)]
    scope = {"headers": [(b"user-agent", b"flood/1.0")]}
    gc.collect()
    before = rss()
    start = time.perf_counter()
    base = int(IPv4Address("10.0.0.0"))
    for i in range(ips):
        ip = str(IPv4Address(base + i))
        subject = Subject(None, None, ip, ip.rsplit(".", 1)[0] + ".0/24")
        body = bodies[i % PROMPTS]
        assessment = await risk.assess(route, subject, scope, body, 1.8e9 + i * 0.01)
        await risk.commit(assessment)
    elapsed = time.perf_counter() - start
    gc.collect()
    grown = rss() - before
    store = risk.store
    assert isinstance(store, MemoryRiskStore)
    counts = store.sizes()
    principals = counts["principals"]
    print(f"{ips:,} distinct IPs, one 1 KB prompt each, max_subjects {max_subjects:,}")
    print(f"  {elapsed:.0f} s, {elapsed / ips * 1e6:.0f} µs a request (assess + commit)")
    print(f"  tracked: {', '.join(f'{name} {n:,}' for name, n in counts.items())}")
    print(
        f"  resident memory grew {grown / 2**20:.1f} MiB: "
        f"{grown / principals:,.0f} B per tracked principal (everything included)"
    )


def exact_principal(count: int = 5_000) -> None:
    store = MemoryRiskStore(half_life=21600.0, window=21600.0, ttl=172800.0, max_subjects=10**6)
    risk, route = engine(10**6)
    risk.store = store
    bodies = [parse_request(body) for body in prompts(64)]
    scope = {"headers": [(b"user-agent", b"flood/1.0")]}

    async def fill() -> None:
        for i in range(count):
            subject = Subject(f"k:{i:032x}", None, "198.51.100.7", "198.51.100.0/24")
            for n in range(8):  # a full ring
                body = bodies[(i + n) % 64]
                a = await risk.assess(route, subject, scope, body, 1.8e9 + n)
                await risk.commit(a)

    tracemalloc.start()
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    asyncio.run(fill())
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(
        f"{count:,} principals with full rings: {(after - before) / count:,.0f} B each "
        "(tracemalloc; their subnet, fingerprint and template buckets included)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ips", type=int, default=1_000_000)
    parser.add_argument("--max-subjects", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(flood(args.ips, args.max_subjects))
    exact_principal()


if __name__ == "__main__":
    main()
