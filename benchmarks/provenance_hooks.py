"""Per-request cost of the provenance hooks on the request path, in-process: the watermark seed
(``provenance.watermark``, in state, and in a header too) and signed responses
(``provenance.signatures``: a 1 KB JSON answer held, digested and signed with Ed25519).

    .venv/bin/python benchmarks/provenance_hooks.py [--requests 60000]

Every row serves the same 1 KB JSON answer to 1,000 identities taking turns (so the seeds
of returning principals are remembered, as in a deployment), batches interleaved as in
overhead.py. Figures on a shared machine are noisy: compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from overhead import Server, chat_requests, measure, traffic
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from guardrail import Guardrail, Policy

from _apps import POLICY
from _requests import PATH

ANSWER = json.dumps(
    {"choices": [{"message": {"role": "assistant", "content": "word " * 190}}]}
).encode()


def json_app() -> Starlette:
    async def endpoint(request: Request) -> Response:
        return Response(ANSWER, media_type="application/json")

    return Starlette(routes=[Route(PATH, endpoint, methods=["POST"])])


def guarded(policy: str) -> Guardrail:
    return Guardrail(json_app(), policy=Policy.from_string(policy), clock=traffic(10_000.0))


async def run(requests: int, batches: int, key: Path) -> dict[str, float]:
    os.environ.setdefault("GUARDRAIL_BENCH_SECRET", "bench-secret")
    os.environ["GUARDRAIL_BENCH_WATERMARK"] = "bench-watermark-key-0123456789abcdef"
    mark = "provenance:\n  watermark: {key: env:GUARDRAIL_BENCH_WATERMARK"
    chats = chat_requests()
    rows = {
        "bare app, 1 KB JSON answer": json_app(),
        "guardrail, 3 memory buckets": guarded(POLICY),
        "  + watermark seed in state": guarded(POLICY + mark + "}\n"),
        "  + and in a header": guarded(POLICY + mark + ", header: x-guardrail-seed}\n"),
    }
    servers = {name: Server(app, chats) for name, app in rows.items()}
    result = await measure(servers, requests, batches)
    # Measured apart: a row fifteen times slower disturbs the rows interleaved with it.
    signed = POLICY + f"provenance:\n  signatures: {{key: file:{key}}}\n"
    rows = {"guardrail (again)": guarded(POLICY), "  + signed response": guarded(signed)}
    servers = {name: Server(app, chats) for name, app in rows.items()}
    return {**result, **await measure(servers, max(batches, requests // 20), batches)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60000)
    parser.add_argument("--batches", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        key = Path(folder) / "signing.pem"
        key.write_bytes(
            Ed25519PrivateKey.generate().private_bytes(
                Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
            )
        )
        result = asyncio.run(run(args.requests, args.batches, key))
    print(f"{'configuration':32} {'µs/request':>11} {'vs guardrail':>13}")
    for name, value in result.items():
        base = result["guardrail (again)" if "sign" in name else "guardrail, 3 memory buckets"]
        print(f"{name:32} {value:11.1f} {value - base:+13.1f}")


if __name__ == "__main__":
    main()
