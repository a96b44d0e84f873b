"""Throughput under load: real uvicorn workers on loopback, a bounded load generator, and every
configuration alternated in one run, as ratios to the bare app (issue 14).

    make load        # or: .venv/bin/python benchmarks/load.py [--workers 1,4] [--rounds 3]
                     #     [--duration 5] [--warmup 1] [--connections 32] [--keys 100]
                     #     [--configs bare,memory,...] [--redis URL] [--generator auto] [--json]

The configurations are overhead.py's apps (benchmarks/_apps.py), each served by uvicorn
workers of its own: the bare Starlette app reading a 1 KB chat body; slowapi with one memory
limit; guardrail with three memory buckets and ``inspect: openai``; the same with Redis
buckets; and the risk engine on top, in memory and in Redis. Each run starts the workers
afresh, sends for ``--warmup`` seconds, measures ``--duration`` seconds at a fixed concurrency
(``--connections`` keep-alive connections, one request in flight on each), and stops them.
Rounds go round robin over the configurations, so that drift hits them alike; a
configuration's ratio is the median over rounds of its rps over the bare app's in the same
round. Each mode (``--workers 1,4``: 1 worker, then 4) has a table of its own; all modes share
one Redis.

Workers: N uvicorn processes, each on a socket of its own bound to one port with SO_REUSEPORT
(benchmarks/_worker.py says why not ``uvicorn --workers``). The kernel spreads connections by
a hash of their addresses: even on average, not exactly, so the spread is measured
(connections each worker holds, mid-run) and printed. With more busy workers than cores an
uneven spread moves latency between connections, not throughput: the workers' CPU stayed the
same from 8/8/7/9 to 3/10/7/12.

Requests: ``--keys`` identities (API keys) taking turns, each sending 16 different 1 KB
prompts in turn, all from 127.0.0.1. With 100 keys and the rates measured here (300 to 5,000
a second), an identity comes back every 20 to 300 ms, so its standing (held a second) decides
most of its requests, as in overhead.py's main risk row. Every run writes to Redis under a key
prefix of its own: each starts from empty state, as each starts from fresh workers.

Generator: wrk where installed (``apt-get install wrk``; a Lua script sends the same request
stream), else benchmarks/_loadgen.py (asyncio protocols, in ``--generator-processes``
processes). Either shares the machine's cores with the workers and Redis: the header says how
many cores there are and which generator ran, and each row how much CPU the workers, Redis and
the generator used over the window. Measured on this project's 2-core machine, bare app, five
runs of each alternated (medians): 1 worker, wrk 2,929 rps, the Python generator 2,863 (0.98);
4 workers, 3,723 and 3,767 (1.01): within the noise (runs vary by 10%). The Python generator
spends more CPU a request (70-80 µs against wrk's 55, kernel included), which with 4 workers
took 0.05 of a core (3%) from them.

Redis: a redis-server this script starts on a free port, unless ``--redis URL`` (checked with
a PING first: guardrail fails open, so an unreachable Redis would measure fast; the workers'
logs are scanned for storage errors too). Keys written to a given Redis are deleted at the
end. Policies read their secret from GUARDRAIL_BENCH_SECRET (set for the workers if unset).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from _requests import PATH, PROMPTS_PER_KEY, stream

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: name: (factory in _apps, row label, needs Redis)
CONFIGS: dict[str, tuple[str, str, bool]] = {
    "bare": ("bare", "bare Starlette app, 1 KB chat body read", False),
    "slowapi": ("slowapi", "slowapi, one memory limit", False),
    "floor": ("floor", "a pure ASGI middleware: body read and replayed, one header", False),
    "memory": ("memory", "guardrail, 3 memory buckets, `inspect: openai`", False),
    "redis": ("redis", "guardrail, 3 Redis buckets", True),
    "risk-memory": ("risk_memory", "+ risk engine, memory", False),
    "risk-redis": ("risk_redis", "+ risk engine, Redis, shared every 50ms", True),
    "risk-redis-200ms": ("risk_redis_200ms", "+ risk engine, Redis, shared every 200ms", True),
    "risk-redis-each-request": (
        "risk_redis_each_request",
        "+ risk engine, Redis, on every request",
        True,
    ),
}


#: What ``make load`` runs: every configuration but the informative ones (the floor under any
#: middleware that inspects the body, share_every: 200ms).
DEFAULT_CONFIGS = [name for name in CONFIGS if name not in ("floor", "risk-redis-200ms")]


class Processes:
    """Every process the benchmark starts, each in a session (so a process group) of its own:
    stopped with its whole group, on the way out too (Ctrl-C, SIGTERM, an exception)."""

    def __init__(self) -> None:
        self.pins: dict[str, str] = {}  # role: the CPUs (taskset's list) its processes run on
        self.running: list[subprocess.Popen[bytes]] = []
        self.starting = False
        self.interrupted = False

    def interrupt(self, signum: int, frame: FrameType | None) -> None:
        """SIGINT, SIGTERM, SIGHUP: KeyboardInterrupt, so that the way out stops everything;
        held while a process starts, until it is on the list."""
        if self.starting:
            self.interrupted = True
        else:
            raise KeyboardInterrupt

    def start(self, command: list[str], role: str = "", **options: Any) -> subprocess.Popen[bytes]:
        cpus = self.pins.get(role)
        if cpus:
            command = ["taskset", "-c", cpus, *command]
        self.starting = True
        try:
            process = subprocess.Popen(command, start_new_session=True, **options)
            self.running.append(process)
        finally:
            self.starting = False
        if self.interrupted:
            raise KeyboardInterrupt
        return process

    def send_signal(self, process: subprocess.Popen[bytes], signum: int) -> None:
        """Signal the process's group, if the process is not reaped yet: while it is not,
        the group's id is its pid, no other process's."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)

    def stop(self, process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
        self.send_signal(process, signal.SIGTERM)  # uvicorn's and redis-server's graceful stop
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            self.send_signal(process, signal.SIGKILL)
            process.wait()
        self.running.remove(process)

    def stop_all(self) -> None:
        for process in reversed(self.running[:]):
            self.stop(process, grace=5.0)


def cpu_seconds(pid: int) -> float:
    """User and system time of a live process, from /proc (0 where that is not readable)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connections_per_worker(port: int, pids: list[int]) -> list[int]:
    """Established connections each worker holds on ``port`` (Linux /proc; [] elsewhere)."""
    try:
        with open("/proc/net/tcp") as table:
            rows = [line.split() for line in table.readlines()[1:]]
        inodes = {row[9] for row in rows if row[3] == "01" and int(row[1][-4:], 16) == port}
        counts = []
        for pid in pids:
            held = 0
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                held += link.startswith("socket:[") and link[8:-1] in inodes
            counts.append(held)
        return counts
    except OSError:
        return []


class Redis:
    """A redis-server on a free port, as tests/redis_servers.py starts one."""

    def __init__(self, processes: Processes, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found: install it, or pass --redis URL")
        port = free_port()
        self.url = f"redis://127.0.0.1:{port}/0"
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(workdir)]
        self.process = processes.start(
            command,
            "others",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not pong(port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"redis-server did not start on port {port}")
            time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def with_prefix(url: str, prefix: str) -> str:
    """``url`` with guardrail's key prefix set to ``prefix``."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "prefix"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("prefix", prefix)], safe=":")))


class Workers:
    """``count`` uvicorn workers serving one configuration on one port (see _worker.py)."""

    def __init__(
        self, processes: Processes, factory: str, count: int, env: dict[str, str], logs: Path
    ) -> None:
        self.processes = processes
        self.started: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        sockets: list[socket.socket] = []
        try:
            for _ in range(count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind(("127.0.0.1", sockets[0].getsockname()[1] if sockets else 0))
                sock.listen(2048)
                sockets.append(sock)
            self.port: int = sockets[0].getsockname()[1]
            for index, sock in enumerate(sockets):
                log = logs / f"{factory}-{self.port}-{index}.log"
                self.logs.append(log)
                with open(log, "wb") as out:
                    self.started.append(
                        processes.start(
                            [sys.executable, str(HERE / "_worker.py"), factory, str(sock.fileno())],
                            "workers",
                            pass_fds=(sock.fileno(),),
                            env=env,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                        )
                    )
        except BaseException:
            self.stop()
            raise
        finally:
            for sock in sockets:  # each worker holds its own
                sock.close()
        self.wait_ready()

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.started]

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(zip(self.started, self.logs, strict=True))
        while waiting:
            process, log = waiting[0]
            if b"Application startup complete." in log.read_bytes():
                waiting.pop(0)
                continue
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = log.read_text(errors="replace")[-3000:]
                raise SystemExit(f"a uvicorn worker did not start ({log}):\n{tail}")
            time.sleep(0.05)  # a real process starting

    def problems(self) -> list[str]:
        """What the workers logged that a clean run does not: guardrail's storage errors (it
        fails open: a Redis configuration would look fast), errors, tracebacks."""
        found = []
        for log in self.logs:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith(("guardrail: storage", "ERROR:", "Traceback")):
                    found.append(line)
        return found

    def stop(self) -> None:
        for process in self.started:
            self.processes.send_signal(process, signal.SIGTERM)  # all at once, then wait for each
        for process in self.started:
            self.processes.stop(process)
        self.started = []


@dataclass
class Run:
    """One configuration's measured window: counts, latency and CPU (seconds of one core per
    second of window: 1.0 is a whole core)."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int = 0
    errors: int = 0
    problems: list[str] = field(default_factory=list)
    spread: list[int] = field(default_factory=list)
    cpu_workers: float = 0.0
    cpu_redis: float | None = None  # None: a Redis given with --redis, not watched
    cpu_generator: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


class Watch:
    """CPU of the workers, Redis and the generator over the measured window (the generator
    marks its beginning and end), and the spread of connections over the workers mid-window."""

    def __init__(self, workers: Workers, redis: Redis | None) -> None:
        self.workers, self.redis = workers, redis
        self.generator: list[int] = []
        self.marks: list[tuple[float, dict[str, float]]] = []
        self.spread: list[int] = []

    def mark(self) -> None:
        redis = [self.redis.process.pid] if self.redis else []
        groups = {"workers": self.workers.pids, "redis": redis, "generator": self.generator}
        cpu = {name: sum(map(cpu_seconds, pids)) for name, pids in groups.items()}
        self.marks.append((time.monotonic(), cpu))

    def middle(self) -> None:
        self.spread = connections_per_worker(self.workers.port, self.workers.pids)

    def fill(self, run: Run) -> Run:
        (begin, before), (end, after) = self.marks[0], self.marks[-1]
        share = {name: (after[name] - before[name]) / (end - begin) for name in before}
        run.cpu_workers, run.cpu_generator = share["workers"], share["generator"]
        run.cpu_redis = share["redis"] if self.redis else None
        run.spread = self.spread
        return run


WRK_SCRIPT = """\
-- load.py's request stream: identity i of {keys} sends request i, i+{keys}, ... (16 prompts)
local keys = {{{keys_table}}}
local bodies = {{{bodies_table}}}
local requests = {{}}
local n = 0
local threads = 0

function setup(thread)
  thread:set("first", threads)
  threads = threads + 1
end

function init(args)
  for i = 1, #bodies do
    local headers = {{["Authorization"] = keys[(i - 1) % #keys + 1],
                     ["Content-Type"] = "application/json"}}
    requests[i] = wrk.format("POST", "{path}", headers, bodies[i])
  end
  n = (first or 0) * math.floor(#requests / {threads})
end

function request()
  n = n % #requests + 1
  return requests[n]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{{"requests": %d, "us": %d, "p50_us": %d, "p99_us": %d, "status": %d, "errors": %d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def wrk_script(keys: int, threads: int) -> str:
    requests = stream(keys)
    keys_table = ", ".join(f'"{key}"' for key in dict.fromkeys(key for key, _ in requests))
    bodies = ",\n".join(f"[==[{body.decode()}]==]" for _, body in requests)
    return WRK_SCRIPT.format(
        keys=keys, keys_table=keys_table, bodies_table=bodies, path=PATH, threads=threads
    )


class Generator:
    name = ""

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def run(self, port: int, watch: Watch) -> Run:
        """Warm up, then measure one window; ``watch`` marks its beginning and end."""
        raise NotImplementedError


class Wrk(Generator):
    """wrk, stopped with SIGINT at the end of the window, so that any duration works (wrk
    times the window itself and counts what completed in it)."""

    name = "wrk"

    def __init__(self, processes: Processes, args: argparse.Namespace, workdir: Path) -> None:
        self.processes, self.args = processes, args
        self.threads = args.threads
        self.script = workdir / "load.lua"
        self.script.write_text(wrk_script(args.keys, self.threads))
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
        self.version = out.split()[1] if out.startswith("wrk ") else "?"

    def describe(self) -> dict[str, Any]:
        return {"name": "wrk", "version": self.version, "threads": self.threads}

    def run(self, port: int, watch: Watch) -> Run:
        self._wrk(port, self.args.warmup, None)
        result = self._wrk(port, self.args.duration, watch)
        return Run(
            requests=result["requests"],
            seconds=result["us"] / 1e6,
            p50_ms=result["p50_us"] / 1000,
            p99_ms=result["p99_us"] / 1000,
            non_2xx=result["status"],
            errors=result["errors"],
        )

    def _wrk(self, port: int, seconds: float, watch: Watch | None) -> dict[str, int]:
        command = ["wrk", f"-t{self.threads}", f"-c{self.args.connections}"]
        command += [f"-d{math.ceil(seconds) + 2}s", "--timeout", "30s", "-s", str(self.script)]
        command.append(f"http://127.0.0.1:{port}{PATH}")
        process = self.processes.start(
            command, "others", stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            if watch:
                watch.generator = [process.pid]
                watch.mark()
            time.sleep(seconds / 2)
            if watch:
                watch.middle()
            time.sleep(seconds / 2)
            if watch:
                watch.mark()
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        finally:
            self.processes.stop(process)
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        if not lines:
            raise SystemExit(f"wrk printed no result:\n{out.decode()}\n{err.decode()}")
        result: dict[str, int] = json.loads(lines[-1])
        return result


class PythonGenerator(Generator):
    """benchmarks/_loadgen.py in ``--generator-processes`` processes, the connections split
    between them."""

    name = "python"

    def __init__(self, processes: Processes, args: argparse.Namespace) -> None:
        self.processes, self.args = processes, args
        self.count = max(1, min(args.generator_processes, args.connections))

    def describe(self) -> dict[str, Any]:
        return {"name": "python (benchmarks/_loadgen.py)", "processes": self.count}

    def run(self, port: int, watch: Watch) -> Run:
        args = self.args
        length = args.keys * PROMPTS_PER_KEY  # of the request stream
        started = []
        try:
            for index in range(self.count):
                share = args.connections // self.count + (index < args.connections % self.count)
                command = [sys.executable, str(HERE / "_loadgen.py"), "--port", str(port)]
                command += ["--connections", str(share), "--keys", str(args.keys)]
                command += ["--offset", str(index * length // self.count)]
                command += ["--warmup", str(args.warmup), "--duration", str(args.duration)]
                started.append(
                    self.processes.start(
                        command, "others", stdin=subprocess.PIPE, stdout=subprocess.PIPE
                    )
                )
            for process in started:
                assert process.stdout is not None
                if process.stdout.readline() != b"ready\n":
                    raise SystemExit("the Python load generator did not start")
            start = time.time() + 0.1  # every process connects at once, then warms up
            for process in started:
                assert process.stdin is not None
                process.stdin.write(f"{start}\n".encode())
                process.stdin.flush()  # communicate() closes it
            watch.generator = [process.pid for process in started]
            end = start + args.warmup + args.duration
            time.sleep(max(0.0, start + args.warmup - time.time()))
            watch.mark()
            time.sleep(args.duration / 2)
            watch.middle()
            time.sleep(max(0.0, end - time.time() - 0.01))
            watch.mark()
            outputs = [process.communicate(timeout=60)[0] for process in started]
        finally:
            for process in started:
                self.processes.stop(process)
        latencies: list[int] = []
        non_2xx = errors = 0
        for out in outputs:
            result = json.loads(out)
            latencies += result["latencies_us"]
            errors += result["errors"]
            non_2xx += sum(n for code, n in result["statuses"].items() if code[0] != "2")
        latencies.sort()
        return Run(
            requests=len(latencies),
            seconds=args.duration,
            p50_ms=percentile(latencies, 0.50) / 1000,
            p99_ms=percentile(latencies, 0.99) / 1000,
            non_2xx=non_2xx,
            errors=errors,
        )


def percentile(ordered: list[int], share: float) -> float:
    return float(ordered[min(len(ordered) - 1, int(share * len(ordered)))]) if ordered else 0.0


def check_redis(url: str) -> None:
    """A PING before the runs: guardrail fails open, so an unreachable Redis would be measured
    as a fast one (the workers' logs say so too; see Workers.problems)."""
    if not url.startswith(("redis://", "rediss://")):
        return  # a cluster or a sentinel: the workers' logs will tell
    import redis

    try:
        with redis.Redis.from_url(url.partition("?")[0], socket_timeout=2) as client:
            client.ping()
    except redis.RedisError as exc:
        raise SystemExit(f"--redis {url.split('@')[-1]}: {exc}") from None


def delete_keys(url: str, prefix: str) -> None:
    """Delete what the runs wrote to a Redis given with --redis (risk state lives two days)."""
    if not url.startswith(("redis://", "rediss://")):
        print(f"keys under {prefix!r} left in {url.split('@')[-1]}: they expire", file=sys.stderr)
        return
    import redis

    try:
        with redis.Redis.from_url(url.partition("?")[0]) as client:
            batch = []
            for key in client.scan_iter(match=f"{prefix}*", count=1000):
                batch.append(key)
                if len(batch) == 1000:
                    client.unlink(*batch)
                    batch = []
            if batch:
                client.unlink(*batch)
    except redis.RedisError as exc:
        print(f"keys under {prefix!r} not deleted: {exc}", file=sys.stderr)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def summarise(workers: int, runs: dict[str, list[Run]]) -> dict[str, Any]:
    """Each configuration's medians over rounds; its ratio is the median of its rps over the
    bare app's in the same round."""
    bare = runs["bare"]
    rows = []
    for name, measured in runs.items():
        ratios = [
            run.rps / base.rps if base.rps else 0.0
            for run, base in zip(measured, bare, strict=True)
        ]
        redis_cpu = [run.cpu_redis for run in measured if run.cpu_redis is not None]
        rows.append(
            {
                "config": name,
                "label": CONFIGS[name][1],
                "rps": median([run.rps for run in measured]),
                "ratio": median(ratios),
                "p50_ms": median([run.p50_ms for run in measured]),
                "p99_ms": median([run.p99_ms for run in measured]),
                "cpu": {
                    "workers": median([run.cpu_workers for run in measured]),
                    "redis": median(redis_cpu) if redis_cpu else None,
                    "generator": median([run.cpu_generator for run in measured]),
                },
                "runs": [
                    {**asdict(run), "rps": run.rps, "ratio": ratio}
                    for run, ratio in zip(measured, ratios, strict=True)
                ],
            }
        )
    return {"workers": workers, "configs": rows}


def table(mode: dict[str, Any], generator: str) -> str:
    workers = mode["workers"]
    title = f"configuration, {workers} uvicorn worker{'s' if workers > 1 else ''}"
    lines = [
        f"| {title} | rps | ratio to bare | p50 ms | p99 ms | CPU cores: workers / Redis / "
        f"{generator} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in mode["configs"]:
        cpu = " / ".join(
            "-" if row["cpu"][part] is None else f"{row['cpu'][part]:.2f}"
            for part in ("workers", "redis", "generator")
        )
        lines.append(
            f"| {row['label']} | {row['rps']:,.0f} | {row['ratio']:.2f} | {row['p50_ms']:.1f} "
            f"| {row['p99_ms']:.1f} | {cpu} |"
        )
    spreads = [run["spread"] for row in mode["configs"] for run in row["runs"] if run["spread"]]
    if workers > 1 and spreads:
        fewest, most = min(min(s) for s in spreads), max(max(s) for s in spreads)
        lines.append(
            f"\nconnections per worker, mid-run: {fewest} to {most} "
            f"(runs: {', '.join('/'.join(map(str, s)) for s in spreads)})"
        )
    for row in mode["configs"]:
        non_2xx = sum(run["non_2xx"] for run in row["runs"])
        errors = sum(run["errors"] for run in row["runs"])
        problems = [line for run in row["runs"] for line in run["problems"]]
        if non_2xx or errors or problems:
            lines.append(
                f"WARNING {row['config']}: {non_2xx} answers not 2xx, {errors} socket errors, "
                f"{len(problems)} problems logged by the workers"
                + (f" (first: {problems[0][:200]})" if problems else "")
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])

    def numbers(text: str) -> list[int]:
        return [int(part) for part in text.split(",")]

    def configs(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [name for name in names if name not in CONFIGS]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}: choose from {list(CONFIGS)}")
        return ["bare"] + [name for name in names if name != "bare"]  # the baseline first

    parser.add_argument("--workers", type=numbers, default=[1, 4], help="modes (default 1,4)")
    parser.add_argument("--configs", type=configs, default=DEFAULT_CONFIGS, help=",".join(CONFIGS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--keys", type=int, default=100, help="identities taking turns")
    parser.add_argument("--redis", metavar="URL", help="use this Redis instead of starting one")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--threads", type=int, default=2, help="wrk's threads")
    parser.add_argument("--generator-processes", type=int, default=1, help="the Python one's")
    parser.add_argument(
        "--pin",
        metavar="CPUS",
        help="run the workers on these CPUs (taskset's list, e.g. 0), the generator and Redis "
        "on the others: the server's cores to itself, as where its clients are elsewhere",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return parser.parse_args(argv)


def pins(cpus: str) -> dict[str, str]:
    """The workers on ``cpus``, everything else on the remaining usable CPUs."""
    usable = sorted(os.sched_getaffinity(0))
    chosen: set[int] = set()
    for part in cpus.split(","):
        first, _, last = part.partition("-")
        try:
            chosen.update(range(int(first), int(last or first) + 1))
        except ValueError:
            raise SystemExit(f"--pin {cpus!r}: CPUs as taskset lists them, e.g. 0 or 0-1") from None
    others = [cpu for cpu in usable if cpu not in chosen]
    if not chosen <= set(usable) or not others:
        raise SystemExit(f"--pin {cpus!r}: choose some of the usable CPUs {usable}, not all")
    return {"workers": cpus, "others": ",".join(map(str, others))}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    processes = Processes()
    if args.pin:
        processes.pins = pins(args.pin)
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    handlers = {signum: signal.signal(signum, processes.interrupt) for signum in signals}
    try:
        with tempfile.TemporaryDirectory(prefix="guardrail-load-") as work:
            try:
                return benchmark(args, processes, Path(work))
            finally:
                for signum in signals:  # a second Ctrl-C must not leave strays
                    signal.signal(signum, signal.SIG_IGN)
                processes.stop_all()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def set_up(
    given: str | None, needs_redis: bool, processes: Processes, workdir: Path
) -> tuple[Redis | None, str, dict[str, str]]:
    """The Redis the configurations use (``given``, checked, or one started here if any needs
    one: None when given) and its URL, and the workers' environment."""
    redis = Redis(processes, workdir) if needs_redis and not given else None
    if given and needs_redis:
        check_redis(given)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), str(HERE), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.setdefault("GUARDRAIL_BENCH_SECRET", "bench-secret")
    return redis, given or (redis.url if redis else ""), env


def benchmark(args: argparse.Namespace, processes: Processes, workdir: Path) -> int:
    use_wrk = args.generator == "wrk" or (args.generator == "auto" and shutil.which("wrk"))
    generator: Generator = (
        Wrk(processes, args, workdir) if use_wrk else PythonGenerator(processes, args)
    )
    needs_redis = any(CONFIGS[name][2] for name in args.configs)
    redis, redis_url, env = set_up(args.redis, needs_redis, processes, workdir)
    prefix = f"grbench:{uuid.uuid4().hex[:8]}:"
    header = describe(args, generator)
    if not args.json:
        print(header["text"], flush=True)
    modes = []
    try:
        for count in args.workers:
            runs: dict[str, list[Run]] = {name: [] for name in args.configs}
            for round_ in range(args.rounds):
                for name in args.configs:
                    factory, _, uses_redis = CONFIGS[name]
                    if uses_redis:
                        env["GUARDRAIL_BENCH_REDIS"] = with_prefix(
                            redis_url, f"{prefix}{count}:{round_}:{name}:"
                        )
                    workers = Workers(processes, factory, count, env, workdir)
                    try:
                        watch = Watch(workers, redis)
                        run = watch.fill(generator.run(workers.port, watch))
                    finally:
                        workers.stop()
                    run.problems = workers.problems()
                    runs[name].append(run)
                    print(
                        f"{count} worker(s), round {round_ + 1}/{args.rounds}, {name}: "
                        f"{run.rps:,.0f} rps, p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
            mode = summarise(count, runs)
            modes.append(mode)
            if not args.json:
                print(f"\n{table(mode, generator.name)}", flush=True)
    finally:
        if args.redis and needs_redis:
            delete_keys(args.redis, prefix)
    if args.json:
        where = "given (--redis)" if args.redis else "started" if redis else None
        print(json.dumps({**header["json"], "redis": where, "modes": modes}, indent=2))
    return 0


def describe(args: argparse.Namespace, generator: Generator) -> dict[str, Any]:
    """What a reader needs to know what the ratios mean: the cores everything shares, the
    server's HTTP parser and loop, the generator."""
    import importlib.metadata
    import importlib.util
    import platform

    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    uvicorn = importlib.metadata.version("uvicorn")
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    gen = generator.describe()
    gen_text = (
        f"wrk {gen['version']}, {gen['threads']} threads"
        if generator.name == "wrk"
        else f"{gen['name']}, {gen['processes']} process(es) (wrk not used)"
    )
    text = (
        f"guardrail load benchmark: {usable} cores (of {cores}) shared by the uvicorn workers, "
        f"redis-server and the generator\n"
        f"server: uvicorn {uvicorn} ({http}, {loop} loop), Python {platform.python_version()}, "
        f"workers on one port by SO_REUSEPORT\n"
        f"generator: {gen_text}; {args.connections} keep-alive connections, one request in "
        f"flight each; {args.keys} API keys, 1 KB chat bodies\n"
        f"runs: {args.duration:g} s measured after {args.warmup:g} s warm-up, {args.rounds} "
        f"round(s) round robin; ratio: median over rounds of rps / the bare app's rps\n"
        f"command: {' '.join(['benchmarks/load.py', *sys.argv[1:]])}"
    )
    data = {
        "cores": usable,
        "cpu_count": cores,
        "server": {"uvicorn": uvicorn, "http": http, "loop": loop},
        "python": platform.python_version(),
        "generator": gen,
        "connections": args.connections,
        "keys": args.keys,
        "duration": args.duration,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "command": ["benchmarks/load.py", *sys.argv[1:]],
    }
    return {"text": text, "json": data}


if __name__ == "__main__":
    raise SystemExit(main())
