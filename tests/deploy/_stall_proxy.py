"""A TCP proxy in front of a real redis-server that can stall the connections open at a given
moment: what their clients send waits in the proxy until the stall ends, then reaches Redis.
A client times out meanwhile and goes on with a new connection, which is not stalled; the
command it gave up on still lands later (a stalled connection mid-XADD)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class _Link:
    held_until = 0.0  # loop time before which this connection's requests wait


class StallProxy:
    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def hold(self, seconds: float) -> None:
        """Stalls every connection open now for ``seconds``; later ones pass at once."""
        until = asyncio.get_running_loop().time() + seconds
        for link in self._links:
            link.held_until = until

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link | None
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(65536):
                if link is not None and (delay := link.held_until - loop.time()) > 0:
                    await asyncio.sleep(delay)  # the request waits, as on a stalled link
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        link = _Link()
        self._links.add(link)
        requests = asyncio.create_task(self._pipe(reader, upstream_writer, link))
        requests.add_done_callback(lambda _: self._links.discard(link))
        for task in (requests, asyncio.create_task(self._pipe(upstream_reader, writer, None))):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


@asynccontextmanager
async def stall_proxy(port: int) -> AsyncIterator[StallProxy]:
    proxy = StallProxy(port)
    server = await asyncio.start_server(proxy._connect, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()
        for task in list(proxy._tasks):
            task.cancel()
        await asyncio.gather(*proxy._tasks, return_exceptions=True)
        await server.wait_closed()
