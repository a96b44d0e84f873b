"""One of load.py's uvicorn workers: serves ``_apps:FACTORY`` on the listening socket the
parent passes as file descriptor FD.

    python benchmarks/_worker.py FACTORY FD

The parent binds one socket per worker to the same port with SO_REUSEPORT, so the kernel
spreads connections over the workers by a hash of each connection's addresses. ``uvicorn
--workers N`` shares one socket instead, and the worker that wakes first accepts every
connection waiting: with wrk's 32 connections opened at once, one worker of four held all 32
in one run (2,227 rps), two held 16 each in the next (4,269 rps). uvicorn's own ``--fd`` would
take the socket, but it wraps it as AF_UNIX, so asyncio never sets TCP_NODELAY on the
connections and each response's body waits for a delayed ACK: the bare app served 705 requests
a second that way (p50 44 ms) against 2,000-2,500. Here the socket keeps its family, and
uvicorn runs as under ``--workers`` (``Server.run(sockets=...)``).
"""

from __future__ import annotations

import socket
import sys

import uvicorn


def main() -> None:
    factory, fd = sys.argv[1], int(sys.argv[2])
    sock = socket.socket(fileno=fd)  # family and type read from the descriptor: AF_INET
    config = uvicorn.Config(f"_apps:{factory}", factory=True, access_log=False, log_level="info")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
