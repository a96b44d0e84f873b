"""load.py's load generator where wrk is not installed: a closed loop over keep-alive
connections, one request in flight on each, in a process of its own (or several).

    python benchmarks/_loadgen.py --port PORT --connections 32 --keys 100 --warmup 1 --duration 5

It prints "ready" once its requests are built, and reads from stdin the wall-clock time to
start at (so that several processes start together). Then it connects, sends for ``--warmup``
seconds without counting, then counts what completes within ``--duration`` seconds, and prints
one JSON line: requests, seconds, latencies (µs, of the counted requests), statuses and errors.
Requests are built once, as bytes (``_requests.stream``, as wrk's script sends them), and answers
parsed no further than their status and length: asyncio protocols, no streams, no HTTP library.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator

from _requests import PATH, stream


class Meter:
    """What one process counts, on the ``perf_counter_ns`` clock: its window opens at ``begin``
    and closes at ``end``, when every connection is closed (what is in flight is not counted,
    as in wrk)."""

    def __init__(self, begin: int, end: int) -> None:
        self.begin, self.end = begin, end
        self.latencies: list[int] = []
        self.statuses: Counter[int] = Counter()
        self.errors = 0
        self.connections: list[Connection] = []
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for connection in self.connections:
            if connection.transport is not None:
                connection.transport.close()


class Connection(asyncio.Protocol):
    def __init__(self, meter: Meter, stream: Iterator[bytes]) -> None:
        self.meter, self.stream = meter, stream
        self.buffer = b""
        self.sent = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        self.sent = time.perf_counter_ns()
        self.transport.write(next(self.stream))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            self.buffer = buffer
            return
        head = buffer[:end].lower()
        at = head.find(b"content-length:")
        if at < 0:  # the apps measured answer with a length: anything else is an error
            self.meter.errors += 1
            self.close()
            return
        stop = head.find(b"\r\n", at)
        length = int(head[at + 15 : stop if stop >= 0 else end])
        if len(buffer) < end + 4 + length:
            self.buffer = buffer
            return
        self.buffer = b""  # one request in flight: nothing follows the answer
        now = time.perf_counter_ns()
        meter = self.meter
        if now >= meter.begin and not meter.closed:
            meter.latencies.append((now - self.sent) // 1000)
            meter.statuses[int(buffer[9:12])] += 1
        self.send()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.meter.closed:  # the server closed it, or it broke
            self.meter.errors += 1


async def generate(args: argparse.Namespace) -> dict[str, object]:
    wire = []
    for authorization, body in stream(args.keys):
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
            f"Authorization: {authorization}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        wire.append(head.encode() + body)
    cycle = iter_from(wire, args.offset % len(wire))
    print("ready", flush=True)  # the parent answers with the wall-clock time to start at
    start = float(await asyncio.to_thread(sys.stdin.readline))
    await asyncio.sleep(max(0.0, start - time.time()))
    begin = time.perf_counter_ns() + int(args.warmup * 1e9)
    meter = Meter(begin, begin + int(args.duration * 1e9))
    loop = asyncio.get_running_loop()
    for _ in range(args.connections):
        _, connection = await loop.create_connection(
            lambda: Connection(meter, cycle), "127.0.0.1", args.port
        )
        meter.connections.append(connection)
    await asyncio.sleep((meter.end - time.perf_counter_ns()) / 1e9)
    meter.close()
    await asyncio.sleep(0)  # let the transports close
    return {
        "requests": len(meter.latencies),
        "seconds": args.duration,
        "latencies_us": meter.latencies,
        "statuses": {str(k): v for k, v in meter.statuses.items()},
        "errors": meter.errors,
    }


def iter_from(wire: list[bytes], offset: int) -> Iterator[bytes]:
    while True:
        yield from wire[offset:]
        offset = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--offset", type=int, default=0, help="where in the stream to start")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    print(json.dumps(asyncio.run(generate(parser.parse_args()))))


if __name__ == "__main__":
    main()
