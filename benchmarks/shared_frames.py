"""How far each simulated population's requests for reasoning sit in frames that other accounts
on the same /24 send: the statistic ``shared_frames`` was designed from (issue 13).

    .venv/bin/python benchmarks/shared_frames.py [--seed 1] [--scale 1] [--days 2]

Reads the simulator's request stream directly (no middleware, ~15 s at scale 1): for every
prompt that asks for reasoning (the engine's own matcher, on the same excerpt), its two frames
(``Sketch.frame``: the first and last eight words, keyed by the /24), and, over the whole run,
which accounts sent each frame. Per account: the share of its requests for reasoning with a
frame that at least two other accounts on its network sent, exact copies of its prompt left
out. The engine counts the same thing with a window (the risk store's) and a bucket of the 8
newest senders, so it sees at most this much; the per-population spread is what sets where the
signal starts (0.5) and is full (0.8).
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

from guardrail.inspection import parse_request
from guardrail.signals import features, sketch
from guardrail.simulate import populations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--days", type=float, default=2.0)
    args = parser.parse_args()
    matcher = features.ReasoningMatcher()
    senders: dict[int, set[tuple[str, int]]] = defaultdict(set)  # frame -> (account, exact)
    asked: dict[str, list[tuple[int, int, int]]] = defaultdict(list)  # account -> frames, exact
    population: dict[str, str] = {}
    for request in populations.stream(args.seed, args.days, args.scale):
        population[request.account] = request.population
        parsed = parse_request(request.body)
        if parsed is None:
            continue
        cut = sketch.excerpt(parsed.prompt)
        if not matcher(cut):
            continue
        sk = sketch.Sketch(sketch.crc(parsed.prompt), ())
        sk.frame(cut, "s:" + request.ip.rsplit(".", 1)[0])
        head, tail = sk.frames
        asked[request.account].append((head, tail, sk.exact))
        if head:
            senders[head].add((request.account, sk.exact))
            senders[tail].add((request.account, sk.exact))

    def shared(account: str, frame: int, exact: int) -> bool:
        others = {a for a, e in senders[frame] if a != account and e != exact}
        return len(others) >= 2

    shares: dict[str, list[float]] = defaultdict(list)
    for account, frames in asked.items():
        hits = sum(
            1 for head, tail, exact in frames
            if head and (shared(account, head, exact) or shared(account, tail, exact))
        )  # fmt: skip
        shares[population[account]].append(hits / len(frames))
    print(f"seed {args.seed}, scale {args.scale}, {args.days:g} days: share of each account's")
    print("requests for reasoning in a frame two other accounts on its /24 sent")
    print(f"{'population':18} {'accounts':>8} {'median':>7} {'p90':>6} {'max':>6}")
    for name in sorted(shares):
        values = sorted(shares[name])
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        print(
            f"{name:18} {len(values):8d} {statistics.median(values):7.2f} {p90:6.2f} "
            f"{values[-1]:6.2f}"
        )


if __name__ == "__main__":
    main()
