"""Shared fixtures: a real redis-server on a free port, and a frozen clock.

Redis tests are required when GUARDRAIL_REQUIRE_REDIS=1 (``make test`` and CI set it):
a missing redis-server then fails the run instead of skipping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from redis_servers import Server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
async def redis_url(redis_server: Server) -> AsyncIterator[str]:
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
