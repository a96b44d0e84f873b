"""What provenance costs per response, in-process (ASGI calls, no network): guardrail with
``inspect: openai`` and provenance off, then on, against the bare app, on a 1 KB JSON chat
completion and on streaming.py's 500-chunk SSE stream.

    .venv/bin/python benchmarks/capture.py [--requests 2000] [--batches 40]

Two figures per row:

- *request path*: the µs a request takes, as the client waits for it. With provenance on,
  that is the capture (SHA-256 and size of the body as served, a bounded copy of a JSON body,
  the deltas of a stream read event by event), the receipt on the audit record, and the hand-
  over to the recorder's queue;
- *with background*: the same plus, per request, what the event loop spends afterwards on it:
  the recorder sketching the output and the audit writer writing the record (every response of
  a provenance route is recorded; with provenance off an allowed request is not). Measured by
  waiting, after each batch, until the recorder has sketched the batch's outputs and the audit
  trail has written its records (``Recorder.settled``, ``AuditLog.flush``).

Batches of every row are interleaved so that drift hits them alike; medians, and the fastest
batch (on a shared machine, the figure least inflated by other processes). The audit trail
goes to a file in a temporary directory, the index too (saved once, at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import streaming  # a sibling script (benchmarks/ is on sys.path when run)
from starlette.types import ASGIApp, Receive, Scope, Send

from guardrail import Guardrail, Policy

POLICY = """
version: 1
secret: env:GUARDRAIL_BENCH_SECRET
audit: {{sink: "file://{folder}/audit-{name}.jsonl"}}
identity:
  api_key: {{header: authorization}}
unmatched: refuse
routes:
  - name: inference
    match: {{path: /v1/}}
    inspect: openai
    limits:
      - {{per: api_key, rate: 1000000000/second}}
      - {{per: ip, rate: 1000000000/second}}
{provenance}
"""
PROVENANCE = 'provenance: {{enabled: true, path: "{folder}/prov-{name}-{{worker}}.grprov"}}'

#: A 1 KB answer of distinct sentences: what a chat completion of ~200 tokens carries.
ANSWER = " ".join(
    f"Step {i}: the {streaming.WORDS[i % 15]} follows the {streaming.WORDS[(3 * i) % 15]}."
    for i in range(40)
)[:1024]


def json_app() -> ASGIApp:
    body = json.dumps(
        {
            "id": "chatcmpl-5f2c9a0e41b7",
            "object": "chat.completion",
            "created": 1_800_000_000,
            "model": "fake-1",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 200, "total_tokens": 212},
        }
    ).encode()
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    end = {"type": "http.response.body", "body": body, "more_body": False}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        await send(start)
        await send(end)

    return app


def guarded(app: ASGIApp, folder: str, name: str, provenance: bool) -> Guardrail:
    ticks = iter(range(10**12))
    extra = PROVENANCE.format(folder=folder, name=name) if provenance else ""
    policy = POLICY.format(folder=folder, name=name, provenance=extra)
    return Guardrail(
        app,
        policy=Policy.from_string(policy),
        clock=lambda: 1_800_000_000.0 + next(ticks) / 1000,
    )


class Client(streaming.Client):
    async def background(self) -> float:
        """µs the loop spent after the batch on its outputs and records."""
        start = time.perf_counter_ns()
        if isinstance(self.app, Guardrail):
            if self.app.recorder is not None:
                await self.app.recorder.settled()
            await self.app.audit.flush()
        return (time.perf_counter_ns() - start) / 1000


async def measure(
    builders: dict[str, Callable[[], ASGIApp]], requests: int, batches: int
) -> dict[str, tuple[float, float, float]]:
    clients = {name: Client(build()) for name, build in builders.items()}
    for client in clients.values():
        if isinstance(client.app, Guardrail):
            await client.app.startup()  # as lifespan does: no request waits for its record
        await client.batch(50)  # warm-up
        await client.background()
    path: dict[str, list[float]] = {name: [] for name in clients}
    total: dict[str, list[float]] = {name: [] for name in clients}
    per_batch = max(1, requests // batches)
    gc.collect()
    for _ in range(batches):
        for name, client in clients.items():
            each = await client.batch(per_batch)
            path[name].append(each)
            total[name].append(each + await client.background() / per_batch)
    for name, client in clients.items():
        if isinstance(client.app, Guardrail):
            recorder = client.app.recorder
            if recorder is not None and (recorder.dropped or not recorder.added):
                raise SystemExit(f"{name}: {recorder.added} sketched, {recorder.dropped} dropped")
            await client.app.shutdown()
    return {
        name: (statistics.median(path[name]), min(path[name]), statistics.median(total[name]))
        for name in clients
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()
    os.environ.setdefault("GUARDRAIL_BENCH_SECRET", "bench-secret")
    sse = streaming.streaming_app(streaming.sse_chunks())
    with tempfile.TemporaryDirectory() as folder:
        for shape, app, requests in (
            ("1 KB JSON completion", json_app(), args.requests),
            (f"{streaming.CHUNKS}-chunk SSE stream", sse, max(40, args.requests // 10)),
        ):
            builders: dict[str, Callable[[], ASGIApp]] = {
                f"bare ASGI app, {shape}": lambda app=app: app,
                "  + guardrail, inspect, provenance off": lambda app=app, s=shape: guarded(
                    app, folder, f"off-{len(s)}", provenance=False
                ),
                "  + guardrail, inspect, provenance on": lambda app=app, s=shape: guarded(
                    app, folder, f"on-{len(s)}", provenance=True
                ),
            }
            rows = asyncio.run(measure(builders, requests, args.batches))
            head = f"{'configuration':46} {'request path µs':>16} {'fastest':>8}"
            print(f"{head} {'with background µs':>19}")
            for name, (path, fastest, total) in rows.items():
                print(f"{name:46} {path:16.1f} {fastest:8.1f} {total:19.1f}")
            off, on = list(rows.values())[1:]
            print(
                f"provenance on adds {on[0] - off[0]:.1f} µs to the request path (fastest "
                f"batches: {on[1] - off[1]:.1f}) and {on[2] - off[2]:.1f} µs in all (sketch, "
                "audit record) per response\n",
                flush=True,
            )


if __name__ == "__main__":
    main()
