"""Where sketching a served text spends its time, stage by stage, in µs per KB of text.

    .venv/bin/python benchmarks/sketch_stages.py [--texts 1000] [--rounds 9] [--batches 8,64]

The texts are ``simulate.leaks.never_served`` answers (~1 KB each, the mix the provenance
benchmark uses). Each stage runs over all the texts in one batch, on its own inputs computed
beforehand, and is timed in thread CPU time (``time.thread_time_ns``): on a shared machine
the wall clock also counts the time other processes held the CPU. Rounds alternate the
stages; the minimum and the median over rounds are printed. Baselines in the same run:
``map(len)`` over the words (one C-level pass per word), the version-1 sketch (pure Python,
``_sketch_v1``) and ``sketch_reference`` (the pure-Python fallback).

The stages repeat what ``sketch_numpy.Tables.sketch`` does, and the script checks that, put
together, they give its sketches: if it changes, change them with it. ``Sketcher.sketch_many``
(normalisation included, like the whole ``Sketcher.sketch``) is timed on batches of the
recorder's ``BATCH`` texts and of 64 (``--batches``), and checked to give the same sketches.
The whole sketch is also timed text by text (``perf_counter``), which is how
``benchmarks/provenance.py`` reports it: the median over texts of each text's µs per KB, with
the version-1 sketch's in the same loop (the texts alternate between them) and the ratio of
the two.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from _sketch_v1 import SketcherV1

from guardrail.provenance import sketch as sk
from guardrail.provenance import sketch_numpy as sn
from guardrail.provenance.normalize import normalized, words
from guardrail.provenance.recorder import BATCH
from guardrail.simulate import leaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--batches", default=f"{BATCH},64", help="sketch_many's batch sizes")
    args = parser.parse_args()
    sketcher = sk.Sketcher(b"benchmark key")
    tables = sn.Tables(sketcher)
    v1 = SketcherV1(b"benchmark key")
    texts = list(leaks.never_served(args.seed, args.texts))
    kb = sum(len(t.encode()) for t in texts) / 1024

    def edges(text: bytes) -> tuple[Any, Any]:
        padded = np.frombuffer(b" " + text + b" ", dtype=np.uint8)
        in_word = padded != sn._SPACE
        found = np.not_equal(in_word[1:], in_word[:-1]).nonzero()[0][: 2 * sk.MAX_WORDS]
        return padded, found

    def prefix(item: tuple[Any, Any]) -> Any:
        padded, _ = item
        out = np.multiply(padded, tables.powers[: len(padded)])
        np.add.accumulate(out, out=out)
        return out

    def word_hashes(item: tuple[Any, Any]) -> Any:
        sums, found = item
        at_edges = sums.take(found)
        out = at_edges[1::2] - at_edges[0::2]
        out *= tables.shifted_inverses.take(found[0::2])
        return out

    def shingles(ws: Any) -> Any:
        count = len(ws) - tables.shingle + 1
        hashes = ws[:count]
        for j in range(1, tables.shingle):
            hashes = hashes * tables.mixers[j - 1]  # a new array: ws is read again
            hashes += ws[j : j + count]
        hashes = hashes ^ (hashes >> sn._SHIFT)
        hashes *= tables.spread
        return hashes

    def ordered(hashes: Any) -> Any:
        out = hashes.copy()  # the inputs are reused round after round
        out.sort()
        return out

    def bins(hashes: Any) -> bytes:
        kept = hashes.take(hashes.searchsorted(tables.bounds), mode="wrap")
        kept += tables.offsets
        return bytes(kept.view(np.uint8)[sn._BYTE :: 8].tobytes())

    normal = [sk._head(normalized(t)) for t in texts]
    found = [edges(x) for x in normal]
    kept = [i for i, (_, e) in enumerate(found) if len(e) >> 1 >= sk.MIN_WORDS]
    found = [found[i] for i in kept]
    sums = [(prefix(f), f[1]) for f in found]
    hashed = list(map(word_hashes, sums))
    mixed = list(map(shingles, hashed))
    sorted_ = list(map(ordered, mixed))
    mine = list(map(bins, sorted_))
    theirs = [sketcher.sketch(texts[i]) for i in kept]
    if mine != theirs:
        raise SystemExit("the stages no longer add up to sketch_numpy.Tables.sketch: update them")
    tokens = [words(t) for t in texts]
    batches = {
        size: [texts[i : i + size] for i in range(0, len(texts), size)]
        for size in map(int, args.batches.split(","))
    }
    for size, inputs in batches.items():
        if [s for batch in inputs for s in sketcher.sketch_many(batch)] != list(
            map(sketcher.sketch, texts)
        ):
            raise SystemExit(f"sketch_many in batches of {size} differs from sketch")

    stages: list[tuple[str, Callable[[Any], object], Sequence[Any]]] = [
        ("map(len) over the words", lambda ws: list(map(len, ws)), tokens),
        ("normalized (+ _head)", lambda t: sk._head(normalized(t)), texts),
        ("word edges", edges, normal),
        ("prefix sums", prefix, found),
        ("word hashes", word_hashes, sums),
        ("shingle hashes (Horner, mix)", shingles, hashed),
        ("sort", ordered, mixed),
        ("bins: search, offsets, bytes", bins, sorted_),
        ("whole Sketcher.sketch", sketcher.sketch, texts),
        *(
            (f"sketch_many, batches of {size}", sketcher.sketch_many, inputs)
            for size, inputs in batches.items()
        ),
        ("version-1 sketch (baseline)", v1.sketch, texts),
        ("sketch_reference (no numpy)", sketcher.sketch_reference, texts[: len(texts) // 4]),
    ]
    timings: dict[str, list[float]] = {name: [] for name, _, _ in stages}
    # texts per stage (the reference runs on a quarter of them, in batches or not)
    counts = {name: len(inputs) for name, _, inputs in stages}
    counts |= {name: len(texts) for name, stage, _ in stages if stage == sketcher.sketch_many}
    for _ in range(args.rounds):
        for name, stage, inputs in stages:
            start = time.thread_time_ns()
            for item in inputs:
                stage(item)
            share = kb * counts[name] / len(texts)
            timings[name].append((time.thread_time_ns() - start) / 1000 / share)
    print(f"{len(texts)} texts, {kb:.0f} KB, median {statistics.median(map(len, texts))} chars")
    print(f"{'stage':30s} {'min':>7s} {'median':>7s}  µs/KB (thread CPU time, batch)")
    for name, values in timings.items():
        print(f"{name:30s} {min(values):7.1f} {statistics.median(values):7.1f}")
    new, old = [], []
    for _ in range(3):
        for text in texts:
            size = len(text.encode()) / 1024
            for sketch, out in ((sketcher.sketch, new), (v1.sketch, old)):
                start = time.perf_counter()
                sketch(text)
                out.append((time.perf_counter() - start) * 1e6 / size)
    now, before = statistics.median(new), statistics.median(old)
    print(
        f"whole sketch, text by text: median {now:.1f} µs/KB (wall), version 1 {before:.1f} "
        f"in the same loop: {now / before:.2f}x"
    )


if __name__ == "__main__":
    main()
