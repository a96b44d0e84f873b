"""Buckets in Redis: one EVALSHA of ``gcra.lua`` per request, so every bucket is charged
atomically on the server in a single round trip.

URIs: ``redis://[[user]:password@]host:port/db``, ``rediss://…``,
``redis+cluster://[[user]:password@]h1:7000,h2:7001``,
``redis+sentinel://[[user]:password@]h1:26379,h2:26379/service_name`` (the password is used
for the sentinels and the master alike). Query parameters: ``timeout`` (seconds, socket and
connect, default 0.25), ``prefix`` (key prefix, default ``gr:``) and ``max_connections``
(charges in flight at once, default 100; more queue for a free connection, at most
``QUEUE_TIMEOUTS`` times ``timeout``).

Nothing is retried: a limiter that waits on a sick Redis adds its latency to every request,
so a failure surfaces at once as ``StorageError`` and ``on_storage_error`` decides. After a
timeout it is unknown whether the script ran: the charge may have been applied.

On a cluster, a request whose subjects hash to several slots takes one call per slot and is
not atomic (see ``cluster.py``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import redis
import redis.asyncio as aioredis
import redis.cluster
import redis.retry
import redis.sentinel
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

from guardrail.backends import cluster, lua
from guardrail.backends.base import BucketCharge, Outcome
from guardrail.backends.resp import multiplexed
from guardrail.backends.uri import RedisTarget, mask_uri, parse_uri
from guardrail.errors import StorageError

#: What a Redis client raises by design (timeouts are OSErrors); see ``client_error``.
REDIS_FAILURES = (RedisError, RedisClusterException, OSError)
_CLIENT_CODE = os.path.dirname(redis.__file__) + os.sep

#: How many ``timeout``s a charge may queue for a connection. A burst of requests must wait
#: its turn rather than fail (and fail open); but a dead server must not pile up a queue.
QUEUE_TIMEOUTS = 4

#: A request names at most a handful of subjects (api_key, account, ip, subnet, global),
#: hence at most that many slots.
CLUSTER_CONNECTIONS_PER_CHARGE = 8

#: What the breaker's probe charges: nothing, on a bucket of its own.
PROBE = BucketCharge("guardrail:probe", "breaker", 1.0, 1, 0)
#: Subjects tried to find one probe key on each primary of a cluster (16384 slots, a few
#: primaries: a handful of tries each).
PROBE_SEARCH = 4096


def connect(target: RedisTarget) -> tuple[lua.Client, list[aioredis.Redis]]:
    """Build the client (no I/O yet); also returns extra clients to close (sentinels)."""
    client, extra = _connect(target, _ASYNC)
    return client, extra


def connect_sync(target: RedisTarget) -> tuple[Any, list[Any]]:
    """``connect``'s blocking twin, for where no event loop runs (the process's end)."""
    return _connect(target, _SYNC)


class _Classes(NamedTuple):
    from_url: Any
    cluster: Any
    node: Any
    sentinel: Any
    retry: Any


_ASYNC = _Classes(aioredis.from_url, RedisCluster, ClusterNode, Sentinel, Retry)
_SYNC = _Classes(
    redis.Redis.from_url,
    redis.cluster.RedisCluster,
    redis.cluster.ClusterNode,
    redis.sentinel.Sentinel,
    redis.retry.Retry,
)


def _connect(target: RedisTarget, classes: _Classes) -> tuple[Any, list[Any]]:
    options: dict[str, Any] = {
        "socket_timeout": target.timeout,
        "socket_connect_timeout": target.timeout,
        "retry": classes.retry(NoBackoff(), 0),
        "max_connections": target.max_connections,
    }
    if target.scheme in ("redis", "rediss"):
        return classes.from_url(target.url, **options), []
    options["username"] = target.username
    options["password"] = target.password
    if target.scheme == "redis+cluster":
        nodes = [classes.node(host, port) for host, port in target.hosts]
        # per node; a request spanning several slots holds one connection per slot
        options["max_connections"] = target.max_connections * CLUSTER_CONNECTIONS_PER_CHARGE
        return classes.cluster(startup_nodes=nodes, **options), []
    sentinel = classes.sentinel(list(target.hosts), sentinel_kwargs=dict(options), **options)
    return sentinel.master_for(target.service), list(sentinel.sentinels)


def client_error(exc: Exception) -> Exception:
    """``exc`` when the client failed: it raised one of its errors, or anything at all while
    its own code ran (a failover made redis-py raise AttributeError as it tore down a
    connection another task had closed: issue 12). Raised again as it is when guardrail's own
    code raised it (reading a reply, say): a bug must not pass for Redis being down, and be
    answered by on_storage_error. The boundary is the call into the client: its frames are
    in the traceback."""
    if isinstance(exc, REDIS_FAILURES):
        return exc
    frames = exc.__traceback__
    while frames is not None:
        if frames.tb_frame.f_code.co_filename.startswith(_CLIENT_CODE):
            return exc
        frames = frames.tb_next
    raise exc


@asynccontextmanager
async def gated(gate: asyncio.Semaphore, wait: float, what: str) -> AsyncIterator[None]:
    """Hold one of the connections ``gate`` counts, waiting at most ``wait`` seconds: a hung
    server must turn into StorageError (and on_storage_error), not into a queue that grows
    with every request. (``RedisStorage.charge`` does the same inline, on the hot path.)"""
    if gate.locked():
        try:
            async with asyncio.timeout(wait):
                await gate.acquire()
        except TimeoutError as exc:
            raise StorageError(f"{what}: every connection busy") from exc
    else:
        await gate.acquire()
    try:
        yield
    finally:
        gate.release()


class RedisStorage:
    """GCRA buckets in Redis, standalone, Sentinel-managed or Cluster."""

    def __init__(self, uri: str) -> None:
        self.uri = mask_uri(uri)  # only ever shown masked
        target = self._target = parse_uri(uri)
        self.prefix = target.prefix
        self.timeout = target.timeout
        # redis-py's pools raise "Too many connections" when exhausted rather than wait:
        # the gate keeps charges in flight within the pool, and makes extra ones queue.
        self.gate = asyncio.Semaphore(target.max_connections)
        try:
            self.client, self._extra = connect(target)
        except (ValueError, TypeError, *REDIS_FAILURES) as exc:
            raise StorageError(f"storage {self.uri!r}: {exc}") from exc
        self._cluster = isinstance(self.client, RedisCluster)
        # The charges (one a request) over one pipelined socket where Redis is one server
        # (resp.py says why); everything else, and Sentinel and Cluster, through redis-py.
        self.fast = (
            None
            if target.scheme not in ("redis", "rediss")
            else multiplexed(self.client, target.timeout)
        )
        self.charger: lua.Caller = self.fast or self.client

    def blocking_client(self) -> tuple[Any, list[Any]]:
        """A blocking client of the same server(s) and the extra ones to close, for the
        process's end, when no event loop runs the others."""
        return connect_sync(self._target)

    async def start(self) -> None:
        """Check the server answers and preload the scripts."""
        try:
            await self.client.ping()
            for script in (lua.GCRA, lua.GCRA_SETTLE):
                await self.client.script_load(script.body)  # every primary, for a cluster
            if self.fast is not None:  # the charges' own connection: its credentials too
                await lua.charge(self.fast, self.prefix, [PROBE], time.time())
        except Exception as exc:
            raise self.failure(client_error(exc)) from exc

    async def probe(self) -> None:
        """Pass only when the server serves charges again (what the breaker waits for): a
        cost-0 charge, that is a script, which a paused server holds (a WRITE pause too, as
        in a manual failover) and a cluster missing slots refuses; on a cluster, one on each
        primary. Bounded by the socket timeouts, like any call."""
        try:
            for charge in self._probes():
                await lua.charge(self.charger, self.prefix, [charge], time.time())
        except Exception as exc:
            raise self.failure(client_error(exc)) from exc

    def _probes(self) -> list[BucketCharge]:
        """One probe charge; on a cluster, one on each primary: the breaker must not close
        while a master's slots are down. (Not PING on every primary: redis-py leaves the
        connections of a multi-node command whose one node is down open.)"""
        if not isinstance(self.client, RedisCluster):
            return [PROBE]
        primaries = {node.name for node in self.client.get_primaries()}
        probes: dict[str, BucketCharge] = {}
        for index in range(PROBE_SEARCH):
            charge = PROBE._replace(subject=f"{PROBE.subject}:{index}")
            key = lua.bucket_key(self.prefix, charge.subject, charge.name)
            node = self.client.nodes_manager.get_node_from_slot(key_slot(key.encode()))
            if node.name in primaries:
                probes.setdefault(node.name, charge)
            if len(probes) == len(primaries):
                break
        return list(probes.values()) or [PROBE]

    async def close(self) -> None:
        if self.fast is not None:
            await self.fast.aclose()
        await self.client.aclose()
        if isinstance(self.client, RedisCluster):
            # After a ConnectionError redis-py marks the cluster client to be initialised
            # again and its aclose() then does nothing; with the breaker open no call came to
            # initialise it, so the connections to the live masters would stay open.
            await self.client.nodes_manager.aclose()
            await self.client.nodes_manager.aclose("startup_nodes")
        for extra in self._extra:
            await extra.aclose()

    async def charge(self, charges: Sequence[BucketCharge], now: float) -> Outcome:
        if not charges:
            return Outcome(True, ())
        if self.gate.locked():
            try:
                async with asyncio.timeout(self.timeout * QUEUE_TIMEOUTS):
                    await self.gate.acquire()
            except TimeoutError as exc:
                raise StorageError(f"storage {self.uri!r}: every connection busy") from exc
        else:
            await self.gate.acquire()
        try:
            if self._cluster:
                return await cluster.charge(self.client, self.prefix, charges, now)
            allowed, states = await lua.charge(self.charger, self.prefix, charges, now)
        except Exception as exc:
            raise self.failure(client_error(exc)) from exc
        finally:
            self.gate.release()
        return Outcome(allowed, tuple(states))

    async def settle(self, charges: Sequence[BucketCharge], now: float) -> None:
        if not charges:
            return
        async with gated(self.gate, self.timeout * QUEUE_TIMEOUTS, f"storage {self.uri!r}"):
            try:
                if self._cluster:
                    await cluster.settle(self.client, self.prefix, charges, now)
                else:
                    await lua.settle(self.charger, self.prefix, charges, now)
            except Exception as exc:
                raise self.failure(client_error(exc)) from exc

    def failure(self, exc: BaseException) -> StorageError:
        return StorageError(f"storage {self.uri!r}: {type(exc).__name__}: {exc}")
