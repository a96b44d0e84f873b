"""Shared fixtures: a real redis-server on a free port, and a frozen clock.

Redis tests are required when GUARDRAIL_REQUIRE_REDIS=1 (``make test`` and CI set it):
a missing redis-server then fails the run instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            message = (
                "redis-server not found: `make test` installs it (apt-get install redis-server)"
            )
            if os.environ.get("GUARDRAIL_REQUIRE_REDIS") == "1":
                pytest.fail(message)
            pytest.skip(message)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)  # waiting for a real server process to come up, not test time
        self.stop()
        pytest.fail(f"redis-server did not start on port {self.port}")

    def cli(self, *args: str) -> str:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)
        try:
            return str(client.execute_command(*args))
        finally:
            client.close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> AsyncIterator[str]:
    """A clean database on the session's real redis-server."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_server.url)
    await client.flushall()
    await client.config_resetstat()
    await client.aclose()
    yield redis_server.url


class FakeClock:
    """An injected clock: tests move time forward instead of sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def _guardrail_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers import SECRET

    monkeypatch.setenv("GUARDRAIL_TEST_SECRET", SECRET)


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server on loopback that accepts connections and never answers; yields its port."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
