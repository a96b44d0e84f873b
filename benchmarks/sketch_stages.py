"""Where sketching a served text spends its time, stage by stage, in µs per KB of text.

    .venv/bin/python benchmarks/sketch_stages.py [--texts 1000] [--rounds 9]

The texts are ``simulate.leaks.never_served`` answers (~1 KB each, the mix the provenance
benchmark uses). Each stage runs over all the texts in one batch, on its own inputs computed
beforehand, and is timed in thread CPU time (``time.thread_time_ns``): on a shared machine
the wall clock also counts the time other processes held the CPU. Rounds alternate the
stages; the minimum and the median over rounds are printed. ``map(len)`` over the words is
the yardstick of one C-level pass per word: compare the stages with it across machines.

The stages repeat what ``Sketcher.sketch_words`` does, and the script checks that, put
together, they give its sketches: if it changes, change them with it. The whole sketch is
also timed text by text (``perf_counter``), which is how ``benchmarks/provenance.py`` reports
it: the median over texts of each text's µs per KB.
"""

from __future__ import annotations

import argparse
import statistics
import time
import zlib
from array import array
from collections.abc import Callable, Sequence
from typing import Any

from guardrail.provenance import sketch as sk
from guardrail.provenance.normalize import strip_markers, words
from guardrail.simulate import leaks


def tail(ordered: bytes) -> bytes:
    """``sketch_words`` after the sort: each bin's first (smallest) key, densified."""
    bins, values = ordered[3::4], ordered[1::4]
    first = list(map(bins.find, range(sk.BINS)))
    if -1 in first:
        return sk._densified(first, values)
    return bytes(map(values.__getitem__, first))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()
    sketcher = sk.Sketcher(b"benchmark key")
    mults, shingle = sketcher._mults, sketcher.shingle
    texts = list(leaks.never_served(args.seed, args.texts))
    kb = sum(len(t.encode()) for t in texts) / 1024
    tokens = [ws[: sk.MAX_WORDS] for ws in map(words, texts) if len(ws) >= sk.MIN_WORDS]
    hashes = [list(map(zlib.crc32, ws)) for ws in tokens]
    packed = [int.from_bytes(array("Q", h), "little") for h in hashes]

    def mix(x: int) -> int:
        mixed = x * mults[0]
        for i, mult in enumerate(mults[1:], 1):
            mixed ^= (x >> (64 * i)) * mult
        return mixed

    mixed = list(map(mix, packed))
    lanes = [((m >> 40) & sk._LOW24) * sk.BINS for m in mixed]

    def keys(item: tuple[int, int]) -> array[int]:
        lane, count = item
        out = array("Q", lane.to_bytes(8 * count, "little"))
        del out[count - shingle + 1 :]
        return out

    counted = list(zip(lanes, map(len, tokens), strict=True))
    unsorted = list(map(keys, counted))
    ordered = [array("I", sorted(k)).tobytes() for k in unsorted]
    mine = list(map(tail, ordered))
    theirs = [sketcher.sketch_words(list(ws)) for ws in tokens]
    if mine != theirs:
        raise SystemExit("the stages no longer add up to Sketcher.sketch_words: update them")

    stages: list[tuple[str, Callable[[Any], object], Sequence[Any]]] = [
        ("map(len) over the words", lambda ws: list(map(len, ws)), tokens),
        ("strip_markers", strip_markers, texts),
        ("words (with strip_markers)", words, texts),
        ("crc32 per word", lambda ws: list(map(zlib.crc32, ws)), tokens),
        ("pack into 64-bit lanes", lambda h: int.from_bytes(array("Q", h), "little"), hashes),
        ("mix shingles (keyed)", mix, packed),
        ("bin and value lanes", lambda m: ((m >> 40) & sk._LOW24) * sk.BINS, mixed),
        ("lanes to an array", keys, counted),
        ("sort", lambda k: array("I", sorted(k)).tobytes(), unsorted),
        ("per-bin minima + densify", tail, ordered),
        ("whole Sketcher.sketch", sketcher.sketch, texts),
    ]
    timings: dict[str, list[float]] = {name: [] for name, _, _ in stages}
    for _ in range(args.rounds):
        for name, stage, inputs in stages:
            start = time.thread_time_ns()
            for item in inputs:
                stage(item)
            timings[name].append((time.thread_time_ns() - start) / 1000 / kb)
    print(f"{len(texts)} texts, {kb:.0f} KB, median {statistics.median(map(len, texts))} chars")
    print(f"{'stage':30s} {'min':>7s} {'median':>7s}  µs/KB (thread CPU time, batch)")
    for name, values in timings.items():
        print(f"{name:30s} {min(values):7.1f} {statistics.median(values):7.1f}")
    per_text = []
    for text in texts:
        start = time.perf_counter()
        sketcher.sketch(text)
        per_text.append((time.perf_counter() - start) * 1e6 / (len(text.encode()) / 1024))
    print(f"whole sketch, text by text: median {statistics.median(per_text):.1f} µs/KB (wall)")


if __name__ == "__main__":
    main()
