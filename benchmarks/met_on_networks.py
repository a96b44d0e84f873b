"""How many other accounts each simulated population has met on its networks by its k-th request:
the evidence a cross-account network signal could have at that point (issue 13, campaigns D and
E, whose medians of requests served before a mitigation the issue asks to be at most 20).

    .venv/bin/python benchmarks/met_on_networks.py [--seed 1] [--hours 6] [--crowd 8]

Reads the simulator's request stream directly (no middleware, ~15 s at scale 1). An account
*meets* another when both send from one /24 within ``--hours`` of each other, counted only on
a network no more crowded than ``--crowd`` other accounts at that moment (a NAT or a carrier's
gateway is where strangers meet). Per population, at an account's 10th, 20th, 40th and 80th
request: the median, 90th percentile and maximum of the distinct accounts it met so far.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from guardrail.simulate import populations

AT = (10, 20, 40, 80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--days", type=float, default=2.0)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--crowd", type=int, default=8)
    args = parser.parse_args()
    window = args.hours * 3600
    last_seen: dict[str, dict[str, float]] = defaultdict(dict)  # subnet -> account -> time
    met: dict[str, set[str]] = defaultdict(set)
    sent: dict[str, int] = defaultdict(int)
    population: dict[str, str] = {}
    found: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for request in populations.stream(args.seed, args.days, 1.0):
        account = request.account
        population[account] = request.population
        seen = last_seen[request.ip.rsplit(".", 1)[0]]
        others = [o for o, t in seen.items() if o != account and request.t - t < window]
        if len(others) <= args.crowd:
            met[account].update(others)
        seen[account] = request.t
        sent[account] += 1
        if sent[account] in AT:
            found[request.population][sent[account]].append(len(met[account]))
    print(f"seed {args.seed}: distinct accounts met on uncrowded /24s (within {args.hours:g} h)")
    print(f"{'population':18}" + "".join(f"{f'at {k}: n med p90 max':>26}" for k in AT))
    for name in sorted(found):
        cells = []
        for k in AT:
            values = sorted(found[name][k])
            if not values:
                cells.append(f"{'-':>26}")
                continue
            n = len(values)
            cells.append(f"{n:>12} {values[n // 2]:>4} {values[int(0.9 * n)]:>4} {values[-1]:>4}")
        print(f"{name:18}" + "".join(cells))


if __name__ == "__main__":
    main()
