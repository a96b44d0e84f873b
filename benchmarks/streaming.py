"""Per-chunk cost of token accounting on a streamed response (issue 5), in-process (ASGI calls,
no network), against the bare app measured in the same run.

    .venv/bin/python benchmarks/streaming.py [--requests 400] [--redis URL]

The app streams a chat completion as 500 SSE chunks of about 190 bytes each (one token a chunk,
as OpenAI and vLLM send them), then a usage chunk and ``[DONE]``. It is a plain ASGI app, so
that what is measured is guardrail's work on each chunk, not a framework's. Rows:

- the bare app;
- guardrail with request limits only: the response goes through untouched (headers added);
- guardrail with a ``cost: tokens`` budget: the relay splits the stream into events, parses
  each one's JSON, counts its tokens and reads the final usage, then settles the budget.

The figure that matters is the last row's added µs divided by 500: the cost of token accounting
per chunk. Batches of the three are interleaved so that drift hits them alike; medians.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import overhead  # a sibling script (benchmarks/ is on sys.path when run)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from guardrail import Guardrail, Policy

CHUNKS = 500

POLICY = """
version: 1
secret: env:GUARDRAIL_BENCH_SECRET
audit: {{sink: "stdout://"}}
identity:
  api_key: {{header: authorization}}
routes:
  - name: inference
    match: {{path: /v1/}}
    inspect: openai
    limits:
      - {{per: api_key, rate: 1000000000/second}}
      - {{per: ip, rate: 1000000000/second}}
{tokens}
"""
TOKENS = "      - {per: api_key, rate: 1000000000/second, cost: tokens}"

WORDS = [
    "the",
    "model",
    "streams",
    "one",
    "token",
    "at",
    "a",
    "time",
    "and",
    "every",
    "chunk",
    "is",
    "a",
    "whole",
    "event",
]


def sse_chunks() -> list[bytes]:
    head = {
        "id": "chatcmpl-5f2c9a0e41b7",
        "object": "chat.completion.chunk",
        "created": 1_800_000_000,
        "model": "fake-1",
    }

    def event(payload: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps({**head, **payload}).encode() + b"\n\n"

    def delta(content: str) -> dict[str, Any]:
        choice = {"index": 0, "delta": {"content": content}, "finish_reason": None}
        return {"choices": [{**choice, "logprobs": None}]}

    chunks = [event(delta(f" {WORDS[i % len(WORDS)]}")) for i in range(CHUNKS)]
    usage = {"prompt_tokens": 12, "completion_tokens": CHUNKS, "total_tokens": 12 + CHUNKS}
    chunks.append(event({"choices": [], "usage": usage}))
    chunks.append(b"data: [DONE]\n\n")
    return chunks


def streaming_app(chunks: list[bytes]) -> ASGIApp:
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/event-stream; charset=utf-8")],
    }
    bodies = [{"type": "http.response.body", "body": c, "more_body": True} for c in chunks]
    end = {"type": "http.response.body", "body": b"", "more_body": False}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        await send(start)
        for body in bodies:
            await send(body)
        await send(end)

    return app


def guarded(app: ASGIApp, tokens: bool, storage: str | None) -> Guardrail:
    ticks = iter(range(10**12))  # an injected clock: a millisecond a call, nothing waits
    policy = POLICY.format(tokens=TOKENS if tokens else "")
    return Guardrail(
        app,
        policy=Policy.from_string(policy),
        clock=lambda: 1_800_000_000.0 + next(ticks) / 1000,
        storage=storage,
    )


BODY = json.dumps(
    {
        "model": "fake-1",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 600,
        "messages": [{"role": "user", "content": "Explain how a token bucket works."}],
    }
).encode()
# overhead.py's request, with this body's length
SCOPE: dict[str, Any] = {
    **overhead.SCOPE,
    "headers": [
        *(h for h in overhead.SCOPE["headers"] if h[0] != b"content-length"),
        (b"content-length", str(len(BODY)).encode()),
    ],
}


class Client:
    """Calls one app the way a server would; checks every response streamed all its chunks."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.chunks = 0

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            self.chunks += 1

    async def batch(self, requests: int) -> float:
        """Mean µs per request over ``requests`` sequential requests."""
        app, send = self.app, self.send
        message = {"type": "http.request", "body": BODY, "more_body": False}

        async def receive() -> Message:
            return message

        start = time.perf_counter_ns()
        for _ in range(requests):
            await app(dict(SCOPE), receive, send)
        return (time.perf_counter_ns() - start) / requests / 1000


async def measure(
    builders: dict[str, Callable[[], ASGIApp]], requests: int, batches: int
) -> dict[str, float]:
    clients = {name: Client(build()) for name, build in builders.items()}
    for client in clients.values():
        await client.batch(50)  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in clients}
    per_batch = max(1, requests // batches)
    gc.collect()
    for _ in range(batches):
        for name, client in clients.items():
            samples[name].append(await client.batch(per_batch))
    for name, client in clients.items():
        calls = 50 + per_batch * batches
        if client.chunks != calls * (CHUNKS + 2):
            raise SystemExit(f"{name}: {client.chunks} chunks for {calls} requests")
        if isinstance(client.app, Guardrail):
            await client.app.shutdown()
    return {name: statistics.median(values) for name, values in samples.items()}


BARE = "bare ASGI app, 500-chunk stream"
LIMITS = "  + guardrail, request limits"
TOKENS_ROW = "  + guardrail, token budget (metered)"
REDIS_ROW = "  + guardrail, token budget, Redis"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--redis", metavar="URL", help="also measure the budget in Redis at URL")
    args = parser.parse_args()
    os.environ.setdefault("GUARDRAIL_BENCH_SECRET", "bench-secret")
    chunks = sse_chunks()
    app = streaming_app(chunks)
    builders: dict[str, Callable[[], ASGIApp]] = {
        BARE: lambda: app,
        LIMITS: lambda: guarded(app, tokens=False, storage=None),
        TOKENS_ROW: lambda: guarded(app, tokens=True, storage=None),
    }
    if args.redis:  # one more round trip (the settlement) per request: informative
        builders[REDIS_ROW] = lambda: guarded(app, tokens=True, storage=args.redis)
    rows = asyncio.run(measure(builders, args.requests, args.batches))
    bare = rows[BARE]
    print(f"{'configuration':40} {'µs/request':>11} {'added µs':>9} {'per chunk':>10}")
    for name, value in rows.items():
        added = value - bare
        print(f"{name:40} {value:11.1f} {added:9.1f} {added / CHUNKS:10.2f}")
    metering = (rows[TOKENS_ROW] - rows[LIMITS]) / CHUNKS
    print(
        f"\ntoken accounting costs {metering:.2f} µs per chunk over guardrail without it "
        f"({(rows[TOKENS_ROW] - bare) / CHUNKS:.2f} µs over the bare app), on {CHUNKS} chunks "
        f"of {sum(map(len, chunks[:CHUNKS])) // CHUNKS} bytes"
    )


if __name__ == "__main__":
    main()
