"""A fixed number of requests through one of ``_apps``'s configurations, in process, for an
instruction counter: timings on a shared machine move by ±30 % between runs, instruction counts
do not. Run it at two request counts and take the difference (start-up cancels out):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/instructions.py risk_memory 300
    # ... and 1300: (second - first) / 1000 instructions a request

A configuration ending in ``+metrics`` is the same with ``metrics: {enabled: true}`` (issue 16:
what metrics add to a request), for ``memory`` and ``risk_memory``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

os.environ.setdefault("GUARDRAIL_BENCH_SECRET", "bench-secret")
logging.disable(logging.WARNING)

import _apps  # noqa: E402  (benchmarks/ is on sys.path when run)
from _requests import PATH, stream  # noqa: E402


def scope(auth: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": "POST", "scheme": "http", "path": PATH,
        "raw_path": PATH.encode(), "query_string": b"", "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
            (b"authorization", auth.encode()), (b"content-length", b"1000"),
        ],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip


POLICIES = {"memory": _apps.INSPECT_POLICY, "risk_memory": _apps.RISK_POLICY}


def build(configuration: str) -> Any:
    name, _, extra = configuration.partition("+")
    if extra == "metrics":
        return _apps._guardrail(POLICIES[name] + "metrics: {enabled: true}\n", redis=False)
    return getattr(_apps, name)()


async def run(configuration: str, count: int) -> None:
    app = build(configuration)
    requests = stream(1000)

    async def send(message: Any) -> None:
        pass

    for i in range(count):
        auth, body = requests[i % len(requests)]
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive(messages: list[dict[str, Any]] = messages) -> Any:
            return messages.pop() if messages else {"type": "http.disconnect"}

        await app(scope(auth), receive, send)


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], int(sys.argv[2])))
