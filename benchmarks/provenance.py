"""Provenance at scale: index cost, sketch speed, find time, and the issue's three trials.

    .venv/bin/python benchmarks/provenance.py [--subjects 10000] [--responses 1000000]
        [--trials 100] [--null-trials 1000] [--mixed-trials 20] [--cache index.grprov]

Builds an index of ``--responses`` served outputs of ``--subjects`` accounts, streamed from
``guardrail.simulate.leaks`` (no text is kept: each account's outputs are regenerated from
its seed when a trial leaks them). Every output, background included, is a realistic ~1 KB
answer; building 1M takes a few minutes, so ``--cache`` saves the index and reuses it.

Trials, each a ``find`` over the whole index:
- leak: 200 outputs of one campaign account, perturbed (60%, reformatted, 20% of words
  replaced); success when that account is ranked first and named;
- null: 200 outputs never served to anyone (same model, same mix of templated and personal
  answers, not perturbed: the harder null); success when nobody is named;
- mixed: 20 outputs from each of 10 accounts of one campaign; success when at least 8 of
  the 10 are in the top 10.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter
from pathlib import Path

from _sketch_v1 import SketcherV1

from guardrail.provenance.attribute import MIN_BINS, MIN_TEXTS, Attribution, attribute
from guardrail.provenance.index import ENTRY_BYTES, ProvenanceIndex
from guardrail.simulate import leaks
from guardrail.simulate.populations import EPOCH

DAYS = 30


def build(args: argparse.Namespace, accounts: list[leaks.LeakAccount]) -> ProvenanceIndex:
    if args.cache and Path(args.cache).exists():
        print(f"index: loaded from {args.cache}")
        return ProvenanceIndex.load(args.cache)
    index = ProvenanceIndex(capacity=max(1, args.responses), retention=DAYS * 86400.0)
    started = time.perf_counter()
    for n, account in enumerate(accounts):
        rng = random.Random(f"times:{account.subject}")
        sketches = index.sketcher.sketch_many(list(leaks.outputs(args.seed, account)))
        for sketch in sketches:
            at = EPOCH + rng.uniform(0, DAYS * 86400)  # drawn for every output, as it was
            if sketch is not None:
                index.add_sketch(account.subject, sketch, at)
        if n % 1000 == 0:
            print(f"  built {n}/{len(accounts)} accounts, {len(index)} entries", flush=True)
    print(f"index: {len(index)} entries built in {time.perf_counter() - started:.0f} s")
    if args.cache:
        index.save(args.cache)
    return index


def sketch_speed(index: ProvenanceIndex, seed: int) -> tuple[float, float]:
    """Median µs per KB over 2,000 outputs of the mix (each timed alone), of the index's
    sketcher and of the version-1 sketch in the same loop (the baseline: timings on a shared
    machine move by ±30 % between runs)."""
    texts = list(leaks.never_served(seed + 7, 2000))
    baseline = SketcherV1(b"benchmark key")
    per_kb: tuple[list[float], list[float]] = ([], [])
    for text in texts:
        size = len(text.encode()) / 1024
        for sketch, out in zip((index.sketcher.sketch, baseline.sketch), per_kb, strict=True):
            start = time.perf_counter()
            sketch(text)
            out.append((time.perf_counter() - start) * 1e6 / size)
    return statistics.median(per_kb[0]), statistics.median(per_kb[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--responses", type=int, default=1_000_000)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--null-trials", type=int, default=1000)
    parser.add_argument(
        "--null-from", type=int, default=0, help="first null sample (to add samples to a run)"
    )
    parser.add_argument("--mixed-trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache", help="index file: reused if present, written if not")
    args = parser.parse_args()
    accounts = leaks.population(args.subjects, args.responses)
    campaign = [a for a in accounts if a.population != "benign"]
    index = build(args, accounts)
    columns = index.columns()
    rng = random.Random(args.seed)
    print(f"entries: {len(index)}, subjects: {len(index.names)}")
    print(
        f"bytes/entry: {index.nbytes / max(1, len(index)):.1f} in buffers "
        f"({ENTRY_BYTES} by layout, no search structure); subject names "
        f"{sum(len(n) for n in index.names) / max(1, len(index)):.2f} more per entry"
    )
    now, before = sketch_speed(index, args.seed)
    print(
        f"sketch: {now:.1f} µs per KB (median; numpy: {index.sketcher.vectorised}), version 1 "
        f"{before:.1f} in the same loop ({now / before:.2f}x)"
    )
    print(f"rule: a text matches at >= {MIN_BINS}/48 bins; named at >= {MIN_TEXTS} texts")

    finds: list[float] = []

    def find(texts: list[str]) -> Attribution:
        start = time.perf_counter()
        result = attribute(index, texts, columns=columns)
        finds.append(time.perf_counter() - start)
        return result

    leak_ok, leak_texts, leak_margin = 0, list[int](), list[int]()
    for trial in range(args.trials):
        account = campaign[trial % len(campaign)]
        outputs = list(leaks.outputs(args.seed, account))
        sample = [leaks.perturb(t, rng) for t in rng.sample(outputs, min(200, len(outputs)))]
        result = find(sample)
        top = result.ranked[0] if result.ranked else None
        ok = top is not None and top.subject == account.subject and bool(result.named)
        leak_ok += ok
        mine = next((e.texts for e in result.ranked if e.subject == account.subject), 0)
        leak_texts.append(mine)
        others = [e.texts for e in result.ranked if e.subject != account.subject]
        leak_margin.append(max(others, default=0))
    print(
        f"leak: {leak_ok}/{args.trials} ranked first and named "
        f"({leak_ok / max(1, args.trials):.1%}); the account's matched texts median "
        f"{statistics.median(leak_texts or [0])} (min {min(leak_texts or [0])}), the next "
        f"subject's median {statistics.median(leak_margin or [0])} "
        f"(max {max(leak_margin or [0])})"
    )
    if finds:
        print(f"find: {statistics.median(finds):.2f} s median over {len(index)} entries, 200 texts")

    null_ok, null_max = 0, Counter[int]()
    for trial in range(args.null_from, args.null_from + args.null_trials):
        sample = list(leaks.never_served(args.seed * 100_003 + trial, 200))
        result = find(sample)
        null_ok += not result.named
        null_max[result.ranked[0].texts if result.ranked else 0] += 1
    print(
        f"null: {null_ok}/{args.null_trials} attributed to nobody "
        f"({null_ok / max(1, args.null_trials):.2%}); the top subject's matched texts: "
        f"{dict(sorted(null_max.items()))}"
    )

    by_campaign: dict[str, list[leaks.LeakAccount]] = {}
    for account in campaign:
        by_campaign.setdefault(account.population, []).append(account)
    mixed_ok, mixed_found = 0, []
    for trial in range(args.mixed_trials):
        members = rng.sample(list(by_campaign.values())[trial % len(by_campaign)], 10)
        sample = []
        for account in members:
            outputs = list(leaks.outputs(args.seed, account))
            sample += [leaks.perturb(t, rng) for t in rng.sample(outputs, 20)]
        result = find(sample)
        top10 = {e.subject for e in result.ranked[:10]}
        found = sum(account.subject in top10 for account in members)
        mixed_found.append(found)
        mixed_ok += found >= 8
    print(
        f"mixed: {mixed_ok}/{args.mixed_trials} with >= 8 of 10 in the top 10 "
        f"({mixed_ok / max(1, args.mixed_trials):.0%}); found per trial {mixed_found}"
    )


if __name__ == "__main__":
    main()
