"""What the provenance recorder costs a worker, in µs of CPU per KB of served text, the way it
runs: its task sketching served outputs (chat completions, parsed, sketched, added to the
index), under light load (one output at a time, the task taking each alone: the loop runs
between them) and under heavy load (outputs queued faster than the task takes them).

    .venv/bin/python benchmarks/recorder_cpu.py [--outputs 2000] [--rounds 5]

Each round times the same loop twice in process CPU time (``time.process_time``): with the
recorder's task running, and with no task (the outputs are only queued), and prints the
difference per KB: the recorder's own cost, the JSON parse and the index included. The minimum
and the median over rounds are printed; rounds alternate the modes. The texts are
``simulate.leaks.never_served`` answers (~1 KB each, as in benchmarks/sketch_stages.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time

from guardrail.provenance.recorder import Recorder
from guardrail.provenance.sketch import Sketcher
from guardrail.simulate import leaks


async def served(outputs: list[bytes], *, task: bool, light: bool, folder: str) -> float:
    """CPU seconds to offer ``outputs`` and have them taken in."""
    rec = Recorder(
        f"{folder}/prov-{{worker}}.grprov",
        capacity=len(outputs) + 1,
        retention=86400.0,
        save_every=3600.0,
        sketcher=Sketcher(b"benchmark key"),
        clock=time.time,
        queue_size=len(outputs) + 1,
    )
    if task:
        await rec.start()
    started = time.process_time()
    for output in outputs:
        rec.offer("a:alice", output, 1_800_000_000.0)
        if light:
            for _ in range(3):
                await asyncio.sleep(0)
    if task:
        await rec.settled()
    spent = time.process_time() - started
    if task:
        await rec.close()
    return spent


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outputs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()
    texts = list(leaks.never_served(args.seed, args.outputs))
    outputs = [json.dumps({"choices": [{"message": {"content": text}}]}).encode() for text in texts]
    kb = sum(len(t.encode()) for t in texts) / 1024
    results: dict[str, list[float]] = {"light": [], "heavy": []}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            for mode in results:
                light = mode == "light"
                with_task = await served(outputs, task=True, light=light, folder=folder)
                without = await served(outputs, task=False, light=light, folder=folder)
                results[mode].append((with_task - without) / kb * 1e6)
    print(f"{args.outputs} outputs, {kb / args.outputs:.2f} KB each on average")
    for mode, figures in results.items():
        print(
            f"recorder, {mode} load: {min(figures):.1f} µs of CPU a KB (min), "
            f"{statistics.median(figures):.1f} (median over {args.rounds} rounds)"
        )


if __name__ == "__main__":
    asyncio.run(main())
