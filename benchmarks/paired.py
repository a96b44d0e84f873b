"""What a request costs a worker against the bare app, both measured at the same time (issue 14):
load.py's ratios at a tenth of their noise on a shared machine.

    .venv/bin/python benchmarks/paired.py [--configs memory,redis,risk-memory,risk-redis]
        [--rounds 6] [--duration 8] [--warmup 1] [--connections 16] [--keys 100]
        [--redis URL] [--json]

Why: on this project's 2-vCPU VM a load.py round's rps moves by ±20 % from one second to the
next whatever runs (the bare app: 5,025 to 7,759 rps in consecutive 1 s rounds), so a ratio of
two rounds measured one after the other carries that noise twice (per-round ratios of a
configuration: standard deviation 0.17 at 1 s, ~0.08 at 5 s), and a median of three runs
moves by ±0.1 between hours.

How: each round starts one uvicorn worker of the bare app and one of the configuration (as
load.py does: benchmarks/_worker.py), warms both up, then drives both at once for
``--duration`` seconds, each with a wrk of its own (one thread, ``--connections``
connections, load.py's request stream). The ratio is the bare worker's CPU a request (user and
system time from /proc over the window, over the requests wrk counted) over the
configuration's: what load.py's throughput ratio measures when a worker is the bottleneck,
with whatever slows the machine meanwhile slowing both. Measured here, the per-round ratios'
standard deviation is ~0.03 while the machine is calm; when it is not they scatter as widely
as load.py's, and this script prints their spread so that a reader can tell. Each
configuration's median over rounds is its ratio.

What it leaves out: throughput itself (two workers share the two cores with two wrk), and a
configuration's cost outside its worker (Redis's CPU: printed, not counted in the ratio). Needs
wrk; Redis configurations start a redis-server unless ``--redis URL`` (keys deleted at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from load import (
    CONFIGS,
    Processes,
    Redis,
    Workers,
    cpu_seconds,
    delete_keys,
    set_up,
    with_prefix,
    wrk_script,
)

from _requests import PATH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    names = [name for name in CONFIGS if name != "bare"]
    parser.add_argument("--configs", default="memory,redis,risk-memory,risk-redis")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=16, help="each wrk's")
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--redis", help="a Redis to use (default: start one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    configs = args.configs.split(",")
    unknown = [name for name in configs if name not in names]
    if unknown:
        parser.error(f"--configs: unknown {', '.join(unknown)} (known: {', '.join(names)})")
    if not shutil.which("wrk"):
        raise SystemExit("paired.py needs wrk (apt-get install wrk)")
    processes = Processes()
    with tempfile.TemporaryDirectory(prefix="guardrail-paired-") as work:
        try:
            return measure(args, configs, processes, Path(work))
        finally:
            processes.stop_all()


def measure(
    args: argparse.Namespace, configs: list[str], processes: Processes, workdir: Path
) -> int:
    script = workdir / "load.lua"
    script.write_text(wrk_script(args.keys, 1))
    needs_redis = any(CONFIGS[name][2] for name in configs)
    redis, redis_url, env = set_up(args.redis, needs_redis, processes, workdir)
    prefix = f"grpaired:{uuid.uuid4().hex[:8]}:"
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    try:
        for round_ in range(args.rounds):
            for name in configs:
                factory, _, uses_redis = CONFIGS[name]
                if uses_redis:
                    env["GUARDRAIL_BENCH_REDIS"] = with_prefix(
                        redis_url, f"{prefix}{round_}:{name}:"
                    )
                pair = [Workers(processes, "bare", 1, env, workdir)]
                try:
                    pair.append(Workers(processes, factory, 1, env, workdir))
                    drive(processes, script, pair, args.warmup, args.connections)
                    watched = redis if uses_redis else None  # its CPU: what this one costs it
                    result = drive(
                        processes, script, pair, args.duration, args.connections, watched
                    )
                finally:
                    for workers in pair:
                        workers.stop()
                results[name].append(result)
                print(
                    f"round {round_ + 1}/{args.rounds}, {name}: bare {result['bare_us']:.0f} "
                    f"µs a request, {name} {result['us']:.0f}: ratio {result['ratio']:.3f}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if args.redis and needs_redis:
            delete_keys(args.redis, prefix)
    summary = {name: summarise(rounds) for name, rounds in results.items()}
    if args.json:
        print(json.dumps({"args": vars(args), "configs": summary}, indent=2))
        return 0
    print(
        f"\n| configuration, 1 worker each, measured with the bare app at once | bare µs/req "
        f"| µs/req | ratio (median of {args.rounds}) | rounds' sd | Redis µs/req |\n"
        "|---|---:|---:|---:|---:|---:|"
    )
    for name, row in summary.items():
        redis_us = "-" if row["redis_us"] is None else f"{row['redis_us']:.0f}"
        print(
            f"| {CONFIGS[name][1]} | {row['bare_us']:.0f} | {row['us']:.0f} | "
            f"**{row['ratio']:.2f}** | {row['sd']:.3f} | {redis_us} |"
        )
    return 0


def drive(
    processes: Processes,
    script: Path,
    pair: list[Workers],
    seconds: float,
    connections: int,
    redis: Redis | None = None,
) -> dict[str, Any]:
    """Both workers driven at once for ``seconds``; each one's CPU a request (µs)."""
    pids = [workers.pids[0] for workers in pair]
    wrk = ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds) + 3}s", "--timeout", "30s"]
    wrks = [
        processes.start(
            [*wrk, "-s", str(script), f"http://127.0.0.1:{workers.port}{PATH}"],
            "others",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for workers in pair
    ]
    try:
        before = [cpu_seconds(pid) for pid in pids]
        redis_before = cpu_seconds(redis.process.pid) if redis else 0.0
        time.sleep(seconds)
        after = [cpu_seconds(pid) for pid in pids]
        redis_after = cpu_seconds(redis.process.pid) if redis else 0.0
        for process in wrks:
            process.send_signal(signal.SIGINT)
        outputs = [process.communicate(timeout=30)[0].decode() for process in wrks]
    finally:
        for process in wrks:
            with contextlib.suppress(ValueError):
                processes.stop(process)
    # wrk counts from its own start (a little before the first CPU mark) to SIGINT (a little
    # after the last): its rate over its window, times this window, is the requests here
    counts = []
    for out in outputs:
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            raise SystemExit(f"wrk printed no result:\n{out}")
        done = json.loads(lines[-1])
        counts.append(done["requests"] / (done["us"] / 1e6) * seconds)
    bare_us, us = ((a - b) / n * 1e6 for a, b, n in zip(after, before, counts, strict=True))
    redis_us = (redis_after - redis_before) / counts[1] * 1e6 if redis else None
    return {"bare_us": bare_us, "us": us, "ratio": bare_us / us, "redis_us": redis_us}


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    ratios = [r["ratio"] for r in rounds]
    redis = None if rounds[0]["redis_us"] is None else [r["redis_us"] for r in rounds]
    return {
        "ratio": statistics.median(ratios),
        "sd": statistics.stdev(ratios) if len(ratios) > 1 else 0.0,
        "rounds": ratios,
        "bare_us": statistics.median(r["bare_us"] for r in rounds),
        "us": statistics.median(r["us"] for r in rounds),
        "redis_us": None if redis is None else statistics.median(redis),
    }


if __name__ == "__main__":
    raise SystemExit(main())
