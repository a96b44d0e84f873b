"""guardrail's own share of a worker's time, from a py-spy profile taken under load (issue 14).

    .venv/bin/python benchmarks/load.py --workers 1 --configs memory --duration 16 &
    .venv/bin/py-spy record --pid WORKER --duration 8 --rate 400 --format raw --nonblocking \\
        --output memory.raw          # WORKER: the _worker.py serving the configuration
    .venv/bin/python benchmarks/own_frames.py memory.raw [--top 20]

A sample counts as guardrail's own when a guardrail frame is on its stack and nothing under
the innermost one is the app (starlette, benchmarks/_apps.py) or the server (uvicorn, h11,
asyncio): the request and response guardrail relays cost the bare app as much. What guardrail
calls in the standard library (hmac, json, re…) counts as its own. ``--nonblocking`` keeps
the worker at speed; a few of its stacks are torn (py-spy reads them while they change).
"""

from __future__ import annotations

import argparse
import collections

NOT_OURS = ("starlette/", "_apps.py", "uvicorn/", "h11/", "asyncio/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", help="py-spy's --format raw output")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    total = 0
    own: collections.Counter[str] = collections.Counter()
    with open(args.raw) as lines:
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            total += int(count)
            frames = stack.split(";")
            ours = [i for i, frame in enumerate(frames) if "guardrail/" in frame]
            if not ours or any(s in f for f in frames[ours[-1] + 1 :] for s in NOT_OURS):
                continue
            innermost = frames[ours[-1]]
            function, _, where = innermost.partition(" (")
            own[f"{function} ({where.split('guardrail/')[-1].split(':')[0]})"] += int(count)
    print(f"{total} samples; guardrail's own: {sum(own.values()) / total:.1%}")
    for name, count in own.most_common(args.top):
        print(f"  {count / total:6.1%}  {name}")


if __name__ == "__main__":
    main()
