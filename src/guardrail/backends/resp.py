"""One socket for the limits' EVALSHA, every call pipelined on it.

redis-py's asyncio client spends about 100 µs of Python on each command (a pool checkout, a
retry wrapper, a timeout around each read, its observability hooks): more than the script it
runs, and the limits send one command on every request. Where Redis is one server (``redis://``,
``rediss://``; ``multiplexed`` also takes a client built for a unix socket, which storage URIs do
not name yet) the charges and settlements go over this instead: commands are
written as they come (those of one event-loop turn in one write), and hiredis reads the replies,
which go to their callers in order (Redis answers a connection's commands in the order it read
them). Measured at 32 requests in flight: ~45 µs a call against redis-py's ~150 (both with
the server's own time).

Failures raise redis-py's exception classes. Each call fails with ``TimeoutError`` when it is
not answered within ``timeout`` of its own. The first to time out retires its connection: new
calls go to a new one, the calls already queued keep waiting for their replies (which come in
order, after the late one) until their own deadlines, and the retired connection is closed
once none is left waiting. A stall so fails the calls it outlasts, as redis-py's pool would,
and a hung server costs a connection a ``timeout`` at most. Sentinel and Cluster stay with
redis-py, which follows failovers and slots; so does a client that takes its credentials from a
provider.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import (
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ConnectionError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
)

try:
    import hiredis

    HIREDIS = True
except ImportError:  # pragma: no cover - the redis extra installs it
    HIREDIS = False

#: Error replies redis-py raises as their own classes; what guardrail tells apart.
_ERRORS: dict[str, type[Exception]] = {
    "NOSCRIPT": NoScriptError,  # lua.evalsha answers it with EVAL
    "READONLY": ReadOnlyError,
    "LOADING": BusyLoadingError,
    "WRONGPASS": AuthenticationError,
    "NOAUTH": AuthenticationError,
}


def pack(args: Sequence[Any]) -> bytes:
    """``args`` as one RESP command (an array of bulk strings), encoded as redis-py does."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int) and not isinstance(arg, bool):
            data = b"%d" % arg
        elif isinstance(arg, float):
            data = repr(arg).encode()
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis: {arg!r}")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def raised(reply: Exception) -> Exception:
    """The exception redis-py would raise for an error reply."""
    message = str(reply)
    code = message.split(" ", 1)[0]
    kind = _ERRORS.get(code, ResponseError)
    if kind is not ResponseError and code in ("NOSCRIPT", "READONLY", "LOADING"):
        message = message[len(code) :].lstrip()
    return kind(message)


class _Wire(asyncio.Protocol):
    """One connection: commands out in order, replies back to their callers in order."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.out: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self.retired = False  # a call timed out: no new calls; closed once none waits
        self.calls = 0  # execute_command calls waiting on this wire (whatever their end)
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, command: bytes) -> asyncio.Future[Any]:
        future = self.loop.create_future()
        if self.lost is not None:  # lost between the connect and this call
            future.set_exception(ConnectionError(str(self.lost)))
            return future
        self.waiting.append(future)
        if not self.out:  # the first of this turn: written once the turn's callers have sent
            self.loop.call_soon(self._write)
        self.out.append(command)
        return future

    def _write(self) -> None:
        if self.transport is not None and self.lost is None:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def data_received(self, data: bytes) -> None:
        reader, waiting = self.reader, self.waiting
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                future = waiting.popleft()  # a reply nobody asked for: IndexError, dropped
                if not future.done():  # a caller cancelled or timed out: its reply, skipped
                    future.set_result(reply)
        except Exception as exc:  # a protocol error: nothing after it can be matched
            self.drop(ConnectionError, f"Redis protocol error: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.drop(ConnectionError, f"Connection to Redis lost: {exc or 'closed by the server'}")

    def drop(self, kind: type[Exception], message: str) -> None:
        """Fail every call still waiting with ``kind(message)``, and close: nothing more is
        read from this socket."""
        if self.lost is None:
            self.lost = kind(message)
        if self.loop.is_closed():  # nobody is left to tell
            self.waiting.clear()
            return
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(kind(message))  # one each: tracebacks are per raise
        if self.transport is not None:
            self.transport.abort()

    def expire(self, future: asyncio.Future[Any], timeout: float) -> None:
        if future.done():
            return
        future.set_exception(TimeoutError(f"Timeout reading from Redis ({timeout:g} s)"))
        # Its reply may still come, late, before those of the calls behind it: they keep their
        # own deadlines here, and new calls go to a connection that is not held up.
        self.retired = True  # closed by the last of its calls to end (execute_command)


class Multiplexed:
    """A Redis server's commands over one pipelined connection (``execute_command`` as
    redis-py's: bytes replies, its exception classes)."""

    def __init__(
        self,
        *,
        host: str = "",
        port: int = 6379,
        path: str = "",
        ssl: Callable[[], Any] | None = None,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        timeout: float,
        connect_timeout: float | None = None,
    ) -> None:
        self.host, self.port, self.path, self.ssl = host, port, path, ssl
        self.timeout = timeout
        self.connect_timeout = connect_timeout or timeout
        self.hello: list[tuple[Any, ...]] = []
        # as redis-py does: a user name alone is a nopass ACL user, authenticated all the same
        if username:
            self.hello.append(("AUTH", username, password or ""))
        elif password is not None:
            self.hello.append(("AUTH", password))
        if db:
            self.hello.append(("SELECT", db))
        self._wire: _Wire | None = None
        self._retired: set[_Wire] = set()  # replaced after a timeout, calls still waiting
        self._connecting: asyncio.Future[_Wire] | None = None

    async def execute_command(self, *args: Any) -> Any:
        wire = self._wire
        if (
            wire is None
            or wire.lost is not None
            or wire.retired
            or wire.loop is not asyncio.get_running_loop()
        ):
            wire = await self._connected()
        future = wire.send(pack(args))
        timer = wire.loop.call_later(self.timeout, wire.expire, future, self.timeout)
        wire.calls += 1
        try:
            reply = await future
        finally:
            timer.cancel()
            wire.calls -= 1
            if wire.retired and not wire.calls and wire.lost is None:  # O(1), cancelled too
                wire.drop(ConnectionError, "Connection to Redis retired after a timeout")
                self._retired.discard(wire)
        if isinstance(reply, Exception):  # an error reply (hiredis.ReplyError)
            raise raised(reply)
        return reply

    async def _connected(self) -> _Wire:
        connecting = self._connecting
        if connecting is None or connecting.get_loop() is not asyncio.get_running_loop():
            connecting = self._connecting = asyncio.ensure_future(self._connect())
            # its callers may all be gone (cancelled) when it fails: nobody else reads that
            connecting.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:
            # shielded: one caller cancelled must not fail the connection the others wait on
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _connect(self) -> _Wire:
        old, self._wire = self._wire, None
        if old is not None and old.retired and old.lost is None:
            self._retired.add(old)  # closed by its last call to end, or by aclose
        elif old is not None:
            # On a loop since closed its socket cannot be closed from here and stays open
            # until collected (a known leak: an app reused on a new loop without shutdown).
            old.drop(ConnectionError, "Connection to Redis replaced")
        loop = asyncio.get_running_loop()
        where = self.path or f"{self.host}:{self.port}"
        wire: _Wire | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.path:
                    _, wire = await loop.create_unix_connection(_Wire, self.path)
                else:
                    context = self.ssl() if self.ssl is not None else None
                    _, wire = await loop.create_connection(_Wire, self.host, self.port, ssl=context)
                for reply in await asyncio.gather(*(wire.send(pack(c)) for c in self.hello)):
                    if isinstance(reply, Exception):  # a wrong password, a missing database
                        raise raised(reply)
        except BaseException as exc:
            if wire is not None:
                wire.drop(ConnectionError, "Redis refused the connection's set-up")
            if isinstance(exc, builtins.TimeoutError):
                raise TimeoutError(f"Timeout connecting to Redis at {where}") from None
            if isinstance(exc, OSError):  # as redis-py says it: its ConnectionError
                raise ConnectionError(f"Error connecting to Redis at {where}: {exc}") from exc
            raise
        self._wire = wire
        return wire

    async def aclose(self) -> None:
        connecting, self._connecting = self._connecting, None
        if connecting is not None and connecting.get_loop() is asyncio.get_running_loop():
            connecting.cancel()  # a connect under way must not leave a socket behind
            with contextlib.suppress(BaseException):
                await connecting
        wire, self._wire = self._wire, None
        retired, self._retired = self._retired, set()
        for old in [*retired, *([wire] if wire is not None else [])]:
            if old.loop is asyncio.get_running_loop():
                old.drop(ConnectionError, "Connection to Redis closed")


def multiplexed(client: Any, timeout: float) -> Multiplexed | None:
    """A ``Multiplexed`` to the server ``client`` (a redis-py client built from a ``redis://``
    or ``rediss://`` URL) talks to; None where it must stay with redis-py: Sentinel, a
    credential provider, a connection class of its own, hiredis missing."""
    if not HIREDIS or not isinstance(client, aioredis.Redis):
        return None
    pool = client.connection_pool
    if type(pool) is not ConnectionPool:  # a Sentinel pool finds its master on each connect
        return None
    options = pool.connection_kwargs
    if options.get("credential_provider") is not None:
        return None
    try:
        # redis-py's own reading of the URL and its TLS options (no I/O until connect)
        shape = pool.connection_class(**options)
    except Exception:
        return None
    common: dict[str, Any] = {
        "username": options.get("username"),
        "password": options.get("password"),
        "db": int(options.get("db") or 0),
        "timeout": timeout,
        "connect_timeout": options.get("socket_connect_timeout") or timeout,
    }
    if type(shape) is UnixDomainSocketConnection:
        return Multiplexed(path=shape.path, **common)
    if type(shape) is Connection:
        return Multiplexed(host=shape.host, port=shape.port, **common)
    if type(shape) is SSLConnection:
        # the TLS context is made at each connect, as redis-py does: certificates rotated on
        # disk are read again, and a missing one is a connection error, not a crash at build
        return Multiplexed(
            host=shape.host,
            port=shape.port,
            ssl=lambda: shape._connection_arguments()["ssl"],
            **common,
        )
    return None
