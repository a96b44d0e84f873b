"""The wire format of the Lua scripts: loading them, their KEYS/ARGV, their replies."""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from guardrail.backends.base import BucketCharge, BucketState
from guardrail.backends.resp import Multiplexed

Client = aioredis.Redis | RedisCluster
#: What runs a script: a redis-py client, or the limits' own connection (resp.py).
Caller = Client | Multiplexed


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A script shipped as a package file, addressed by its SHA1 for EVALSHA."""

    body: bytes
    sha: str

    @classmethod
    def load(cls, name: str, library: str | None = None) -> LuaScript:
        """The script in package file ``name``, after ``library``'s (functions several
        scripts share: Redis runs each script on its own)."""
        files = importlib.resources.files("guardrail.backends")
        body = files.joinpath(name).read_bytes()
        if library is not None:
            body = files.joinpath(library).read_bytes() + b"\n" + body
        return cls(body, hashlib.sha1(body, usedforsecurity=False).hexdigest())


GCRA = LuaScript.load("gcra.lua")
GCRA_SETTLE = LuaScript.load("gcra_settle.lua")


async def evalsha(
    client: Caller, script: LuaScript, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    """One EVALSHA; on NOSCRIPT (a flushed, restarted or failed-over server) one EVAL,
    which runs the script and caches it for the next EVALSHA."""
    try:
        return await client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    except NoScriptError:
        return await client.execute_command("EVAL", script.body, len(keys), *keys, *args)


#: A bucket's interval, burst and cost as gcra.lua reads them, by those numbers: a route's
#: limits make few, and formatting a float costs more than finding it (token costs vary: the
#: cache is emptied when it grows past SPECS_MAX).
_SPECS: dict[tuple[float, int, int], str] = {}
SPECS_MAX = 4096


def _spec(charge: BucketCharge) -> str:
    numbers = (charge.interval, charge.burst, charge.cost)
    spec = _SPECS.get(numbers)
    if spec is None:
        if len(_SPECS) >= SPECS_MAX:
            _SPECS.clear()
        # repr: the shortest text that reads back as the same double (Lua's tonumber: strtod)
        spec = _SPECS[numbers] = f"{numbers[0]!r} {numbers[1]!r} {numbers[2]!r}"
    return spec


def bucket_key(prefix: str, subject: str, name: str) -> str:
    # The subject is the hash tag, so a subject's buckets share a cluster slot.
    return f"{prefix}{{{subject}}}:{name}"


async def charge(
    client: Caller, prefix: str, charges: Sequence[BucketCharge], now: float
) -> tuple[bool, list[BucketState]]:
    """Run gcra.lua over ``charges`` (which must share a slot on a cluster)."""
    keys = [bucket_key(prefix, c.subject, c.name) for c in charges]
    # One argument: redis-py packs each argument in Python (~1 µs apiece), three per bucket.
    spec = " ".join([repr(now), *[_spec(c) for c in charges]])
    reply = await evalsha(client, GCRA, keys, (spec,))
    # {allowed, remaining_1, reset_after_1, retry_after_1, ...}, floats as strings
    states = [
        BucketState(int(reply[i]), float(reply[i + 1]), float(reply[i + 2]))
        for i in range(1, len(reply), 3)
    ]
    return bool(reply[0]), states


async def settle(client: Caller, prefix: str, charges: Sequence[BucketCharge], now: float) -> None:
    """Run gcra_settle.lua: move each bucket by its charge's signed ``cost``, unconditionally
    (``charges`` must share a slot on a cluster)."""
    keys = [bucket_key(prefix, c.subject, c.name) for c in charges]
    spec = " ".join([repr(now), *[f"{c.interval!r} {c.cost!r}" for c in charges]])
    await evalsha(client, GCRA_SETTLE, keys, (spec,))
