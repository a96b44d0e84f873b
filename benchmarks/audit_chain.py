"""What a keyed audit chain (audit.chain_key) adds per record, off the request path.

Two figures, plain SHA-256 against HMAC-SHA256: the link alone over a typical record line, and
the writer's whole work per record (serialise, link, hand a batch of 512 to a sink that keeps
nothing), alternated run by run; the median is reported.

    .venv/bin/python benchmarks/audit_chain.py [--records 50000] [--runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

from guardrail.audit.chain import KeyedChain, PlainChain
from guardrail.audit.record import encode, format_ts
from guardrail.audit.writer import AuditLog

KEY = b"k" * 32


def make_record(i: int) -> dict[str, Any]:
    """A limit decision as the middleware hands it over (SPEC section 4)."""
    return {
        "ts": format_ts(1_795_874_400.0 + i),
        "request_id": f"req-{i:06d}",
        "policy": "sha256:" + "ab" * 32,
        "mode": "enforce",
        "route": "inference",
        "method": "POST",
        "path": "/v1/chat/completions",
        "subject": {"api_key": f"k:{i % 7:032x}", "ip": "203.0.113.7", "subnet": "203.0.113.0/24"},
        "action": "limit",
        "tier": None,
        "score": 12.5,
        "signals": {"timing_regularity": 10.0, "prompt_templating": 2.5},
        "limit": {"per": "api_key", "rate": "60/minute", "remaining": 0, "retry_after": 4},
        "status": 429,
    }


class NullSink:
    async def write(self, lines: Sequence[str]) -> None:
        pass

    async def close(self) -> None:
        pass

    async def last_line(self) -> str | None:
        return None


def link_cost(line: str, chain: PlainChain | KeyedChain, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        chain.link(line)
    return (time.perf_counter() - start) / n


async def writer_cost(records: int, key: bytes | None) -> float:
    log = AuditLog(NullSink(), chain_key=key, queue_size=records + 1)
    await log.start()
    batch = [make_record(i) for i in range(records)]
    start = time.perf_counter()
    for record in batch:
        log.emit(record)
    await log.flush()
    elapsed = time.perf_counter() - start
    await log.close()
    return elapsed / records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    line = encode({**make_record(1), "writer": "host:1:20261128T140000Z:abcd", "seq": 1})
    plain_link: list[float] = []
    keyed_link: list[float] = []
    plain_all: list[float] = []
    keyed_all: list[float] = []
    for _ in range(args.runs):
        plain_link.append(link_cost(line, PlainChain(), args.records))
        keyed_link.append(link_cost(line, KeyedChain(KEY), args.records))
        plain_all.append(asyncio.run(writer_cost(args.records, None)))
        keyed_all.append(asyncio.run(writer_cost(args.records, KEY)))

    def us(values: list[float]) -> float:
        return statistics.median(values) * 1e6

    print(f"record line: {len(line)} bytes; {args.records} records x {args.runs} runs (median)")
    print(f"link alone      sha256 {us(plain_link):6.2f} us   hmac-sha256 {us(keyed_link):6.2f} us")
    print(f"writer, per rec sha256 {us(plain_all):6.2f} us   hmac-sha256 {us(keyed_all):6.2f} us")
    print(f"added by the key: {us(keyed_all) - us(plain_all):+.2f} us per record")


if __name__ == "__main__":
    main()
