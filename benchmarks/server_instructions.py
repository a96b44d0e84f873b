"""Instructions a request costs a real uvicorn worker (issue 14): what load.py's ratios come
from, counted instead of timed, so that the shared machine's noise does not move it.

    .venv/bin/python benchmarks/server_instructions.py bare memory risk_memory \\
        [--requests 300,1300] [--connections 32] [--keys 100] [--redis URL] [--keep DIR]

For each configuration (a factory of ``_apps``), a worker is started under ``valgrind
--tool=callgrind`` (as load.py starts one: ``_worker.py`` on a socket of its own), sent exactly
N requests by a closed loop of ``--connections`` keep-alive connections (load.py's request
stream: ``--keys`` identities, 1 KB chat bodies), then stopped (SIGTERM, uvicorn's graceful
stop). Run at two counts, the difference over the difference in requests is the cost of one
request, start-up and shutdown cancelled out: the socket reads and writes, h11, uvicorn,
Starlette and the app, and guardrail, as load.py's workers run them. benchmarks/instructions.py
counts the same configurations in process, without the server.

The client is this process, not counted. Under valgrind a worker runs ~50 times slower, so
every connection has its next request waiting, as under load. The worker's idle ticks (uvicorn
checks its state every 0.1 s) cost a few thousand instructions each: a run ~20 % longer than
another moves the figure by well under 1 %: two runs of each configuration agreed within
0.2 %. Redis configurations need ``--redis URL``, a scratch one: each run writes under a key
prefix of its own (from empty state, as in load.py), and leaves its keys there. ``--keep DIR``
keeps callgrind's profiles (``callgrind_annotate``: which C functions a difference is in).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from load import with_prefix

from _requests import PATH, stream

HERE = Path(__file__).resolve().parent
COLLECTED = re.compile(rb"Collected : (\d+)")


class Client(asyncio.Protocol):
    """One keep-alive connection, one request in flight, until ``remaining`` runs out."""

    def __init__(self, shared: dict[str, int], wire: list[bytes], done: asyncio.Event) -> None:
        self.shared, self.wire, self.done = shared, wire, done
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.send()

    def send(self) -> None:
        shared = self.shared
        if shared["sent"] >= shared["total"]:
            return
        assert self.transport is not None
        self.transport.write(self.wire[shared["sent"] % len(self.wire)])
        shared["sent"] += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15 : head.find(b"\r\n", at) if b"\r\n" in head[at:] else end])
        if len(self.buffer) < end + 4 + length:
            return
        if self.buffer[9:12] != b"200":
            self.shared["failed"] += 1
        self.buffer = b""
        self.shared["answered"] += 1
        if self.shared["answered"] >= self.shared["total"]:
            self.done.set()
        self.send()


async def drive(port: int, count: int, connections: int, keys: int) -> dict[str, int]:
    wire = [
        (
            f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {auth}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for auth, body in stream(keys)
    ]
    shared = {"total": count, "sent": 0, "answered": 0, "failed": 0}
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    transports = []
    for _ in range(connections):
        transport, _ = await loop.create_connection(
            lambda: Client(shared, wire, done), "127.0.0.1", port
        )
        transports.append(transport)
    await done.wait()
    for transport in transports:
        transport.close()
    await asyncio.sleep(0.5)
    return shared


def measure(factory: str, count: int, args: argparse.Namespace, workdir: Path) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    port = sock.getsockname()[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env.setdefault("GUARDRAIL_BENCH_SECRET", "bench-secret")
    if args.redis:  # every run from empty state, as in load.py
        prefix = f"grinstr:{uuid.uuid4().hex[:8]}:{factory}:{count}:"
        env["GUARDRAIL_BENCH_REDIS"] = with_prefix(args.redis, prefix)
    log = workdir / f"{factory}-{count}.log"
    command = [
        "valgrind", "--tool=callgrind",
        f"--callgrind-out-file={args.keep}/{factory}-{count}.out" if args.keep else
        "--callgrind-out-file=/dev/null",
        sys.executable, str(HERE / "_worker.py"), factory, str(sock.fileno()),
    ]  # fmt: skip
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            command, pass_fds=(sock.fileno(),), env=env, stdout=out, stderr=subprocess.STDOUT
        )
    sock.close()
    try:
        deadline = time.monotonic() + 600
        while b"Application startup complete." not in log.read_bytes():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{factory}: the worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        shared = asyncio.run(drive(port, count, args.connections, args.keys))
        if shared["failed"]:
            raise SystemExit(f"{factory}: {shared['failed']} answers not 200")
        worker.send_signal(signal.SIGTERM)
        worker.wait(600)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    found = COLLECTED.findall(log.read_bytes())
    if not found:
        raise SystemExit(f"{factory}: valgrind printed no count:\n{log.read_text()[-3000:]}")
    return int(found[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("configs", nargs="+", help="factories of _apps: bare, memory, ...")
    parser.add_argument("--requests", default="300,1300", help="the two counts")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--redis", help="for the Redis configurations")
    parser.add_argument(
        "--keep", metavar="DIR", help="keep callgrind's profiles there (callgrind_annotate)"
    )
    args = parser.parse_args()
    low, high = (int(part) for part in args.requests.split(","))
    with tempfile.TemporaryDirectory(prefix="guardrail-instr-") as tmp:
        for factory in args.configs:
            counts = [measure(factory, n, args, Path(tmp)) for n in (low, high)]
            per = (counts[1] - counts[0]) / (high - low)
            print(
                f"{factory}: {per:,.0f} instructions a request "
                f"({counts[0]:,} at {low}, {counts[1]:,} at {high})",
                flush=True,
            )


if __name__ == "__main__":
    main()
