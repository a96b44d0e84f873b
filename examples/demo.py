"""`make demo`: ten minutes of traffic against the example server, in a couple of seconds.

A well-behaved client (one chat request every 3 s) and a scripted scraper (5 requests a second)
call the example OpenAI-compatible server through guardrail. Time is injected, so the demo does
not wait; the requests, the middleware and the audit trail are real. At the end the audit
summary shows who was limited.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from examples.openai_server import FakeModel, create_app
from guardrail.cli import main as guardrail_cli
from guardrail.identity import hash_key

SECONDS = 600
CLIENTS = {
    # name: (API key, address seen behind the proxy, seconds between requests)
    "normal client": ("sk-alice-1234", "198.51.100.23", 3.0),
    "scraper": ("sk-scrape-9999", "203.0.113.7", 0.2),
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def run(audit_path: Path) -> dict[str, Counter[int]]:
    clock = Clock()
    app = create_app(model=FakeModel(), clock=clock, audit=f"file://{audit_path}")  # no latency
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    results: dict[str, Counter[int]] = {name: Counter() for name in CLIENTS}
    schedule = sorted(
        (i * gap, name) for name, (_, _, gap) in CLIENTS.items() for i in range(int(SECONDS / gap))
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
        for at, name in schedule:
            key, address, _ = CLIENTS[name]
            clock.now = 1_800_000_000.0 + at
            response = await http.post(
                "/v1/chat/completions",
                headers={"authorization": f"Bearer {key}", "x-forwarded-for": address},
                json={
                    "model": "fake-1",
                    "messages": [{"role": "user", "content": f"question {at}"}],
                },
            )
            results[name][response.status_code] += 1
    await app.shutdown()  # flush the audit trail
    return results


def main() -> int:
    os.environ.setdefault("GUARDRAIL_SECRET", "demo-secret-not-for-production")
    secret = os.environ["GUARDRAIL_SECRET"].encode()
    with tempfile.TemporaryDirectory() as tmp:
        audit_path = Path(tmp) / "audit.jsonl"
        results = asyncio.run(run(audit_path))
        print(
            "Ten simulated minutes against examples/openai_server.py "
            "(policy examples/policy.yaml):\n"
        )
        for name, counts in results.items():
            key = CLIENTS[name][0]
            print(
                f"  {name:14} key hash {hash_key(secret, key)}  "
                f"served {counts[200]:5d}  limited (429) {counts[429]:5d}"
            )
        print("\n$ guardrail audit summary audit.jsonl\n")
        code = guardrail_cli(["audit", "summary", str(audit_path)])
    ok = results["normal client"][429] == 0 and results["scraper"][429] > 0
    print(
        "\nresult:", "the scraper was limited and the normal client was not" if ok else "UNEXPECTED"
    )
    return code if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
