"""The limits' own connection (resp.py): replies to their callers, failures as redis-py's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    NoScriptError,
    ResponseError,
    TimeoutError,
)

from guardrail.backends import BucketCharge, lua
from guardrail.backends.redis import RedisStorage
from guardrail.backends.resp import Multiplexed, multiplexed, pack
from guardrail.errors import StorageError

from redis_servers import Server

pytestmark = pytest.mark.redis

NOW = 1_800_000_000.0
CHARGE = BucketCharge("api_key:k:" + "c" * 32, "inference:0", 1.0, 5, 1)


@pytest.fixture
async def wire(redis_url: str) -> AsyncIterator[Multiplexed]:
    client = aioredis.from_url(redis_url)
    fast = multiplexed(client, timeout=2.0)
    await client.aclose()
    assert fast is not None
    yield fast
    await fast.aclose()


def test_pack_encodes_as_redis_py_does() -> None:
    assert pack(("SET", b"k", 3, 0.1)) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n3\r\n$3\r\n0.1\r\n"
    assert pack(("ECHO", "é")) == b"*2\r\n$4\r\nECHO\r\n$2\r\n\xc3\xa9\r\n"
    with pytest.raises(TypeError, match="cannot send bool"):
        pack(("SET", "k", True))


async def test_calls_in_flight_get_their_own_replies(wire: Multiplexed) -> None:
    replies = await asyncio.gather(*(wire.execute_command("ECHO", f"m{i}") for i in range(500)))
    assert replies == [f"m{i}".encode() for i in range(500)]


async def test_a_cancelled_call_leaves_the_others_their_replies(wire: Multiplexed) -> None:
    await wire.execute_command("PING")  # connected: the three calls below go out together
    calls = [asyncio.ensure_future(wire.execute_command("ECHO", name)) for name in "abc"]
    await asyncio.sleep(0)  # each has sent its command and waits for its reply
    calls[1].cancel()
    assert await calls[0] == b"a"
    assert await calls[2] == b"c"
    assert calls[1].cancelled()
    assert await wire.execute_command("ECHO", "d") == b"d"


async def test_an_error_reply_raises_redis_py_s_exception_and_the_connection_stays(
    wire: Multiplexed,
) -> None:
    with pytest.raises(ResponseError, match="unknown command"):
        await wire.execute_command("NOSUCHCOMMAND")
    with pytest.raises(NoScriptError):
        await wire.execute_command("EVALSHA", "0" * 40, 0)
    assert await wire.execute_command("PING") == b"PONG"


async def test_a_hung_server_times_out_every_call(silent_server: int) -> None:
    fast = Multiplexed(host="127.0.0.1", port=silent_server, timeout=0.2)
    try:
        calls = [asyncio.ensure_future(fast.execute_command("PING")) for _ in range(3)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(result, TimeoutError) for result in results), results
    finally:
        await fast.aclose()


async def test_a_paused_server_times_out_then_the_next_call_reconnects(redis_url: str) -> None:
    admin = aioredis.from_url(redis_url)
    fast = Multiplexed(
        host="127.0.0.1", port=admin.connection_pool.connection_kwargs["port"], timeout=0.2
    )
    try:
        first_id = await fast.execute_command("CLIENT", "ID")
        await admin.execute_command("CLIENT", "PAUSE", 400, "ALL")
        with pytest.raises(TimeoutError):
            await fast.execute_command("PING")
        await admin.execute_command("CLIENT", "UNPAUSE")
        assert await fast.execute_command("CLIENT", "ID") != first_id  # a new connection
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await fast.aclose()
        await admin.aclose()


async def test_a_timeout_fails_its_own_call_and_the_others_keep_their_deadlines(
    redis_url: str,
) -> None:
    """A stall fails the calls it outlasts, not every call queued on the connection: the one
    that timed out retires its connection (new calls go to a new one), and a call behind it
    still gets its reply if it comes within that call's own timeout."""
    admin = aioredis.from_url(redis_url)
    fast = Multiplexed(
        host="127.0.0.1", port=admin.connection_pool.connection_kwargs["port"], timeout=0.6
    )
    try:
        first_id = await fast.execute_command("CLIENT", "ID")
        # real time: the server's pause is real (and not ended early: UNPAUSE waits too)
        await admin.execute_command("CLIENT", "PAUSE", 750, "ALL")
        head = asyncio.ensure_future(fast.execute_command("PING"))  # times out at 0.6 s
        await asyncio.sleep(0.35)
        behind = asyncio.ensure_future(fast.execute_command("ECHO", "behind"))  # due by 0.95
        with pytest.raises(TimeoutError):
            await head
        after = asyncio.ensure_future(fast.execute_command("CLIENT", "ID"))
        assert await behind == b"behind"  # answered at 0.75 s, when the pause ends
        assert await after != first_id  # new calls went to a new connection
    finally:
        await fast.aclose()
        await admin.aclose()


async def test_a_connection_the_server_closed_is_replaced(
    wire: Multiplexed, redis_url: str
) -> None:
    first_id = await wire.execute_command("CLIENT", "ID")
    admin = aioredis.from_url(redis_url)
    try:
        await admin.execute_command("CLIENT", "KILL", "ID", first_id)
    finally:
        await admin.aclose()
    # sent before or after the close reached us: answered, or failed as redis-py fails
    with contextlib.suppress(ConnectionError):
        await wire.execute_command("PING")
    assert await wire.execute_command("CLIENT", "ID") != first_id


async def test_a_refused_connection_is_redis_py_s_connection_error() -> None:
    fast = Multiplexed(host="127.0.0.1", port=1, timeout=0.5)
    with pytest.raises(ConnectionError, match=r"Error connecting to Redis at 127\.0\.0\.1:1\b"):
        await fast.execute_command("PING")


async def test_password_user_and_database_come_from_the_url(tmp_path: Path) -> None:
    server = Server(tmp_path, "--user", "alice", "on", ">wonderland", "~*", "+@all")
    url = f"redis://alice:wonderland@127.0.0.1:{server.port}/3"
    storage = RedisStorage(url)
    raw = aioredis.from_url(url, decode_responses=True)
    try:
        await storage.start()
        assert storage.fast is not None
        outcome = await storage.charge([CHARGE], NOW)
        assert outcome.allowed
        key = lua.bucket_key(storage.prefix, CHARGE.subject, CHARGE.name)
        assert await raw.exists(key) == 1  # in database 3, where redis-py looks
        wrong = Multiplexed(
            host="127.0.0.1", port=server.port, username="alice", password="no", timeout=1.0
        )
        with pytest.raises(AuthenticationError):
            await wrong.execute_command("PING")
    finally:
        await raw.aclose()
        await storage.close()
        server.stop()


async def test_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "redis.sock"
    server = Server(tmp_path, "--unixsocket", str(path), "--unixsocketperm", "700")
    client = aioredis.from_url(f"unix://{path}")
    fast = multiplexed(client, timeout=1.0)
    try:
        assert fast is not None and fast.path == str(path)
        assert await fast.execute_command("ECHO", "sock") == b"sock"
    finally:
        if fast is not None:
            await fast.aclose()
        await client.aclose()
        server.stop()


def test_closed_it_serves_the_next_event_loop(redis_server: Server) -> None:
    fast = Multiplexed(host="127.0.0.1", port=redis_server.port, timeout=1.0)

    async def serve(word: str) -> bytes:  # an app started, served and stopped (lifespan)
        try:
            return bytes(await fast.execute_command("ECHO", word))
        finally:
            await fast.aclose()

    assert asyncio.run(serve("one")) == b"one"
    assert asyncio.run(serve("two")) == b"two"


async def test_sentinel_and_cluster_stay_with_redis_py() -> None:
    sentinel = Sentinel([("127.0.0.1", 1)])  # type: ignore[no-untyped-call]
    assert multiplexed(sentinel.master_for("mymaster"), timeout=1.0) is None
    cluster = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", 1)])
    assert multiplexed(cluster, timeout=1.0) is None
    await cluster.aclose()


async def test_a_storage_whose_server_stops_answering_fails_with_storage_error(
    silent_server: int,
) -> None:
    storage = RedisStorage(f"redis://127.0.0.1:{silent_server}/0?timeout=0.2")
    try:
        with pytest.raises(StorageError, match="Timeout reading from Redis"):
            await storage.charge([CHARGE], NOW)
    finally:
        await storage.close()


async def test_a_user_without_a_password_authenticates_as_redis_py_does(tmp_path: Path) -> None:
    """Review of issue 14: ``redis://limiter@host`` names a nopass ACL user; the charges'
    connection must log in as it, not run as ``default`` (here: disabled)."""
    server = Server(tmp_path, "--user", "limiter", "on", "nopass", "~*", "+@all")
    admin = aioredis.from_url(server.url)
    await admin.execute_command("ACL", "SETUSER", "default", "off")
    await admin.aclose()
    storage = RedisStorage(f"redis://limiter@127.0.0.1:{server.port}/0")
    try:
        await storage.start()  # the charges' connection is tried at start
        assert storage.fast is not None
        assert (await storage.charge([CHARGE], NOW)).allowed
    finally:
        await storage.close()
        server.stop()


async def test_a_missing_tls_certificate_is_a_storage_error_at_connect() -> None:
    storage = RedisStorage("rediss://127.0.0.1:1/0?ssl_ca_certs=/nonexistent/ca.pem&timeout=0.5")
    try:
        assert storage.fast is not None
        with pytest.raises(StorageError, match="ConnectionError"):
            await storage.charge([CHARGE], NOW)
    finally:
        await storage.close()


async def test_closing_while_connecting_leaves_no_socket(silent_server: int) -> None:
    fast = Multiplexed(host="127.0.0.1", port=silent_server, password="x", timeout=5.0)
    call = asyncio.ensure_future(fast.execute_command("PING"))
    await asyncio.sleep(0.05)  # connected, waiting for AUTH's reply (the server never answers)
    await fast.aclose()
    with pytest.raises((ConnectionError, asyncio.CancelledError)):
        await call
    assert fast._wire is None


async def test_a_retired_connection_closes_when_its_last_call_is_cancelled(
    silent_server: int,
) -> None:
    """Review: a retired connection closed only when a call timed out or a reply came; one whose
    last caller gave up (a request cancelled) stayed open against a hung server, and aclose
    did not reach it."""
    fast = Multiplexed(host="127.0.0.1", port=silent_server, timeout=0.2)
    retired = []
    try:
        for _ in range(3):
            head = asyncio.ensure_future(fast.execute_command("PING"))
            await asyncio.sleep(0.05)
            behind = asyncio.ensure_future(fast.execute_command("PING"))
            with pytest.raises(TimeoutError):
                await head
            wire = fast._wire
            assert wire is not None and wire.retired
            retired.append(wire)
            behind.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await behind
        assert all(w.transport is not None and w.transport.is_closing() for w in retired)
        head = asyncio.ensure_future(fast.execute_command("PING"))
        await asyncio.sleep(0.1)
        behind = asyncio.ensure_future(fast.execute_command("PING"))
        with pytest.raises(TimeoutError):
            await head
        waiting = fast._wire
        assert waiting is not None and waiting.retired and not behind.done()
        await fast.aclose()  # a call still waits on the retired connection: closed all the same
        with pytest.raises(ConnectionError):
            await behind
        assert waiting.transport is not None and waiting.transport.is_closing()
    finally:
        for w in retired:
            if w.transport is not None:
                w.transport.abort()
