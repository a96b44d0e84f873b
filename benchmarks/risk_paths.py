"""Which way the memory risk engine takes each of load.py's requests, and what each way costs
(issue 14), on a simulated clock instead of the real one.

    .venv/bin/python benchmarks/risk_paths.py                   # the shares of each path
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/risk_paths.py --run 1800    # ... and 10800: the difference
        #                                  over 9,000 requests is load.py's mix, one request

Why a simulated clock: the engine decides most requests of a busy principal from its standing
(its last assessment, RESCORE_AFTER old at most) and analyses one prompt in ANALYSE_EVERY once
its shares rest on ANALYSE_ALL_UNTIL prompts. Which path a request takes so depends on the
rate each principal sends at. Under valgrind a process runs ~50 times slower than under
load.py, so on the real clock every principal's standing is stale and every request is assessed
in full, its prompt analysed: what ``instructions.py`` and ``server_instructions.py`` count for
``risk_memory`` is that path alone. Here the clock advances 1/``--rate`` a request, whatever the
process's speed: load.py's stream (``--keys`` identities, 16 1 KB prompts each, in turn) at
load.py's rate (one worker serves the memory risk engine at ~1,800 requests a second), the
first ``--warmup`` seconds its warm-up.

``--force`` sends every request one way, to count that way alone: ``fold`` (decided from the
standing, no prompt analysed), ``prompt`` (from the standing, its prompt analysed), ``full``
(assessed in full, its prompt analysed). ``--policy memory`` is the same stream without the
risk engine (limits and ``inspect: openai``), ``bare`` the app alone.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
from typing import Any

os.environ.setdefault("GUARDRAIL_BENCH_SECRET", "bench-secret")
logging.disable(logging.WARNING)

from instructions import scope  # noqa: E402

from guardrail import Guardrail, Policy  # noqa: E402
from guardrail.signals import engine  # noqa: E402

import _apps  # noqa: E402  (benchmarks/ is on sys.path when run)
from _requests import stream  # noqa: E402

POLICIES = {"risk": _apps.RISK_POLICY, "memory": _apps.INSPECT_POLICY}


class Clock:
    def __init__(self) -> None:
        self.now = 1_764_000_000.0

    def __call__(self) -> float:
        return self.now


def build(policy: str, clock: Clock) -> Any:
    if policy == "bare":
        return _apps.bare_app(read_body=True)
    return Guardrail(
        _apps.bare_app(read_body=True), policy=Policy.from_string(POLICIES[policy]), clock=clock
    )


def force(app: Guardrail, way: str) -> None:
    risk = app.risk
    assert risk is not None
    if way == "fold":
        risk.rescore_after = float("inf")
        engine.ANALYSE_ALL_UNTIL, engine.ANALYSE_EVERY = 0.0, 1 << 62
    elif way == "prompt":
        risk.rescore_after = float("inf")
        engine.ANALYSE_ALL_UNTIL = float("inf")
    elif way == "full":
        risk.rescore_after = 0.0
        engine.ANALYSE_ALL_UNTIL = float("inf")


def count_paths(ways: collections.Counter[str]) -> None:
    """Count, by wrapping the engine's two ways, which one each request takes."""
    assess, fold = engine.RiskEngine._assess, engine.RiskEngine._fold

    async def counted_assess(self: Any, *args: Any, **kwargs: Any) -> Any:
        ways["full, prompt analysed" if args[4] is not None else "full"] += 1
        return await assess(self, *args, **kwargs)

    def counted_fold(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = fold(self, *args, **kwargs)
        if result[0]:
            analysed = len(args) > 5 and args[5] is not None
            ways["standing, prompt analysed" if analysed else "standing"] += 1
        return result

    engine.RiskEngine._assess = counted_assess  # type: ignore[method-assign]
    engine.RiskEngine._fold = counted_fold  # type: ignore[method-assign]


async def send(app: Any, clock: Clock, requests: list[tuple[str, bytes]], rate: float, first: int,
               count: int) -> None:  # fmt: skip
    async def sent(message: Any) -> None:
        pass

    for i in range(first, first + count):
        auth, body = requests[i % len(requests)]
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive(messages: list[dict[str, Any]] = messages) -> Any:
            return messages.pop() if messages else {"type": "http.disconnect"}

        clock.now += 1.0 / rate
        await app(scope(auth), receive, sent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1800.0, help="requests a second")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds")
    parser.add_argument("--policy", choices=("risk", "memory", "bare"), default="risk")
    parser.add_argument("--force", choices=("fold", "prompt", "full"))
    parser.add_argument("--run", type=int, help="send this many requests, print nothing")
    args = parser.parse_args()
    clock = Clock()
    app = build(args.policy, clock)
    if args.force:
        force(app, args.force)
    requests = stream(args.keys)
    if args.run is not None:
        asyncio.run(send(app, clock, requests, args.rate, 0, args.run))
        return
    ways: collections.Counter[str] = collections.Counter()
    count_paths(ways)
    warm = round(args.warmup * args.rate)
    asyncio.run(send(app, clock, requests, args.rate, 0, warm))
    ways.clear()
    measured = round(args.duration * args.rate)
    asyncio.run(send(app, clock, requests, args.rate, warm, measured))
    print(f"{args.keys} keys at {args.rate:.0f} requests/s, after {warm} requests of warm-up:")
    for way, n in ways.most_common():
        print(f"  {way:28s} {n:6d}  {n / measured:6.1%}")


if __name__ == "__main__":
    main()
