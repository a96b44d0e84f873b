"""Issued challenges and clearance uses in Redis (see ``challenges``): any worker or host
verifies what another issued. One command a call, on a ``RedisStorage``'s client."""

from __future__ import annotations

import contextlib
import math

from guardrail.backends.redis import RedisStorage, client_error, gated


class RedisChallengeStore:
    """On a ``RedisStorage``'s client, under its prefix, within its connection gate."""

    def __init__(self, storage: RedisStorage) -> None:
        self.storage = storage

    def _key(self, kind: str, name: str) -> str:
        return f"{self.storage.prefix}{kind}:{name}"

    async def put(self, owner: str, record: bytes, expires_at: float, now: float) -> bytes | None:
        # SET NX, then GET the live one: one round trip, one key (so one slot in a cluster)
        key = self._key("ch", owner)
        ttl_ms = max(1, math.ceil((expires_at - now) * 1000))
        pipe = self.storage.client.pipeline(transaction=False)
        pipe.set(key, record, px=ttl_ms, nx=True)
        pipe.get(key)
        async with self._gate():
            try:
                _, live = await pipe.execute()
            except Exception as exc:
                raise self.storage.failure(client_error(exc)) from exc
        return live if isinstance(live, bytes) else None

    async def peek(self, owner: str, now: float) -> bytes | None:
        record = await self._call("GET", self._key("ch", owner))
        return record if isinstance(record, bytes) else None

    async def take(self, owner: str, now: float) -> bytes | None:
        record = await self._call("GETDEL", self._key("ch", owner))
        return record if isinstance(record, bytes) else None

    async def use(self, clearance_id: str, expires_at: float, now: float) -> int:
        key = self._key("cl", clearance_id)
        pipe = self.storage.client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.pexpireat(key, math.ceil(expires_at * 1000))
        async with self._gate():
            try:
                count, _ = await pipe.execute()
            except Exception as exc:
                raise self.storage.failure(client_error(exc)) from exc
        return int(count)

    async def grant(self, name: str, expires_at: float, now: float) -> None:
        pipe = self.storage.client.pipeline(transaction=False)
        pipe.delete(self._key("cl", name))
        pipe.set(self._key("gr", name), repr(expires_at), pxat=math.ceil(expires_at * 1000))
        async with self._gate():
            try:
                await pipe.execute()
            except Exception as exc:
                raise self.storage.failure(client_error(exc)) from exc

    async def granted(self, name: str, now: float) -> float | None:
        raw = await self._call("GET", self._key("gr", name))
        if not isinstance(raw, bytes):
            return None
        expires_at = float(raw)
        return expires_at if now < expires_at else None

    async def _call(self, *command: str | bytes | int) -> object:
        async with self._gate():
            try:
                return await self.storage.client.execute_command(*command)
            except Exception as exc:
                raise self.storage.failure(client_error(exc)) from exc

    def _gate(self) -> contextlib.AbstractAsyncContextManager[None]:
        storage = self.storage
        return gated(storage.gate, storage.timeout, f"storage {storage.uri!r}")
