"""Whether compiling guardrail's request path with mypyc makes a worker cheaper (issue 14):
the same commit as it is and compiled, each measured against the bare app at once
(``paired.py``), the two alternated.

    .venv/bin/python benchmarks/compiled.py [--pairs 2] [--rounds 4]
        [--configs memory,risk-memory]

Why: the throughput targets left (memory limits 0.85, memory risk engine 0.75) need a third
of guardrail's cost a request gone, spread over ~20 functions and ~70 calls, none of them
dominant; a compiled build is the obvious way to cut them all at once. mypyc compiles the
modules below as they are (typed, ``mypy --strict`` clean); ``middleware.py`` does not compile
(a code-generation error on ``Guardrail.__init__``), nor ``relay.py`` (a class inheriting from a
builtin) or ``signals/state.py`` (protocols inheriting protocols).

How: ``git worktree``-free: the committed HEAD is cloned twice into a temporary directory, one
copy's ``src/`` compiled in place (the extension modules sit next to the sources and are
imported before them), and ``paired.py`` is run from each copy in turn, ``--pairs`` times, so
that an hour's drift hits both. Prints each run's table and the medians of each side.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Every module a request walks through with the memory limits and the memory risk engine
#: that mypyc compiles as it is.
MODULES = [
    "guardrail/identity.py",
    "guardrail/limits.py",
    "guardrail/backends/memory.py",
    "guardrail/backends/base.py",
    "guardrail/inspection.py",
    "guardrail/metering.py",
    "guardrail/decision.py",
    "guardrail/paths.py",
    "guardrail/forwarded.py",
    "guardrail/deadlines.py",
    "guardrail/budgets.py",
    "guardrail/early.py",
    "guardrail/signals/engine.py",
    "guardrail/signals/features.py",
    "guardrail/signals/sketch.py",
    "guardrail/signals/cohort.py",
    "guardrail/signals/behaviour.py",
    "guardrail/backends/risk_memory.py",
]

_RATIO = re.compile(r"^\| (.+?) \|.*\| \*\*([0-9.]+)\*\* \|", re.MULTILINE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--configs", default="memory,risk-memory")
    args = parser.parse_args()
    python = sys.executable
    mypyc = Path(python).with_name("mypyc")
    with tempfile.TemporaryDirectory() as workdir:
        trees = {"as it is": Path(workdir, "plain"), "compiled": Path(workdir, "compiled")}
        for tree in trees.values():
            subprocess.run(["git", "clone", "-q", str(ROOT), str(tree)], check=True)
        print("compiling", len(MODULES), "modules with mypyc…", flush=True)
        subprocess.run(
            [str(mypyc), *MODULES],
            cwd=trees["compiled"] / "src",
            check=True,
            stdout=subprocess.DEVNULL,
        )
        ratios: dict[tuple[str, str], list[float]] = {}
        for pair in range(args.pairs):
            for side, tree in trees.items():
                print(f"\n== pair {pair + 1}/{args.pairs}, {side}", flush=True)
                run = subprocess.run(
                    [python, "benchmarks/paired.py", "--configs", args.configs,
                     "--rounds", str(args.rounds)],
                    cwd=tree, check=True, capture_output=True, text=True,
                )  # fmt: skip
                table = run.stdout[run.stdout.index("| configuration") :]
                print(table.rstrip(), flush=True)
                for name, ratio in _RATIO.findall(table):
                    ratios.setdefault((name, side), []).append(float(ratio))
    print("\n| configuration | as it is | compiled |\n|---|---:|---:|")
    for name in dict.fromkeys(name for name, _ in ratios):
        cells = [ratios.get((name, side), []) for side in trees]
        shown = [f"{statistics.median(c):.2f} ({', '.join(f'{r:.2f}' for r in c)})" for c in cells]
        print(f"| {name} | {shown[0]} | {shown[1]} |")


if __name__ == "__main__":
    main()
