"""Risk state in Redis, shared by every worker: one pipelined round trip to read a request's
state, one to write it.

Writes are commutative (``risk.lua`` adds forward-decayed increments; bits are OR-ed; lists
are pushed), so the pipeline needs no transaction: workers racing on one principal each land
their update. Each state is read by one ``risk_read.lua`` call and written by one ``risk.lua``
call: redis-py spends ~25 µs of CPU on every pipelined command on this project's CI machine,
and a request touches up to six states (measured: a load 610 → 500 µs, a save 790 → 530 µs
against one command per key).

On a cluster each state's keys share a hash tag, hence a slot, and redis-py's cluster
pipeline sends each node its commands concurrently: still one round trip of latency.

Keys (``P`` the prefix, ``K`` a ``Keys`` string, ``E`` a window epoch)::

    P{r:K}            hash: counters, "_L" landmark, "_H" their half-life, "_t" last seen,
                      "_m"/"_p" parameters
    P{r:K}:ring       list, newest first (principals)
    P{r:K}:band       string "level:held" (principals)
    P{r:K}:sp:E       bitmap of subnets seen in window E (principals)
    P{r:K}:m:E        bitmap of principals seen in window E (subnets, fingerprints)
    P{r:T}            list, newest first (template bucket T)

Bitmaps are set with BITFIELD and read with GET: byte ``i // 8``, most significant bit first,
holds offset ``i`` (as BITFIELD and SETBIT number bits), decoded to the int whose bit ``i``
is that offset, as the memory store keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Collection, Sequence
from itertools import compress
from typing import Any

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from guardrail.backends import lua
from guardrail.backends.redis import client_error, gated
from guardrail.backends.risk_memory import Remote
from guardrail.errors import StorageError
from guardrail.signals.state import (
    BUCKET_SIZE,
    COHORT,
    PRINCIPAL,
    RING_SIZE,
    Band,
    Keys,
    Snapshot,
    Update,
)

logger = logging.getLogger("guardrail")

#: A state Redis refuses at every flush (a key of the wrong type) is said at most this often.
WARN_EVERY = 60.0

RISK = lua.LuaScript.load("risk.lua", "risk_state.lua")
READ = lua.LuaScript.load("risk_read.lua", "risk_state.lua")
SYNC = lua.LuaScript.load("risk_sync.lua", "risk_state.lua")
_SCRIPTS = {RISK.sha: RISK, READ.sha: READ, SYNC.sha: SYNC}

#: The log of written states (a stream): each flush adds the names it wrote, and reads what
#: the other workers added since its last read. Kept to about LOG_MAX entries (a few seconds
#: of flushes of many workers; a worker reads it every READ_EVERY_OTHERS), at most LOG_READ read
#: at once.
#: States one risk_sync.lua call writes and reads at most: a few ms of Redis's time (measured
#: 20-50 ms for 256 principals written and read, on a loaded 2-core machine), short of any
#: timeout, and a stall the limits charged on the same Redis hardly feel.
SYNC_STATES = 64
#: How long a flush's marker is kept (ms). A batch is sent again at the next flush, and then
#: every interval while Redis does not answer: one sent again later than this (its reply lost,
#: then Redis unreachable for two minutes) may be counted twice. Markers cost ~100 bytes of
#: Redis each: at 20 flushes a second, ~250 KB a worker.
MARKER_MS = 120_000
LOG = "~log"
LOG_MAX = 4096
LOG_READ = 4096

#: A window's bitmap outlives the two windows it is read in by this much: expiry runs on
#: Redis's clock, windows on the callers' (as TTL_SLACK_MS in gcra.lua).
BITMAP_SLACK = 1.0

#: Reverses the bits of each byte: Redis numbers a byte's bits from the most significant.
_REVERSED = bytes(int(f"{byte:08b}"[::-1], 2) for byte in range(256))
_PRINCIPAL_FIELDS = {name.encode(): index for index, name in enumerate(PRINCIPAL)}
_COHORT_FIELDS = {name.encode(): index for index, name in enumerate(COHORT)}


class RedisRiskStore:
    """Risk state next to the buckets of a ``RedisStorage``, on its client (not owned: the
    storage closes it). ``uri`` is the storage's masked URI, for messages. ``gate``, when
    given, is held for each round trip: the storage's own, so that risk state and buckets
    together stay within the client's connection pool.

    The client must return bytes (redis-py's default ``decode_responses=False``).
    """

    def __init__(
        self,
        client: lua.Client,
        *,
        prefix: str,
        uri: str,
        half_life: float,
        window: float,
        ttl: float,
        gate: asyncio.Semaphore | None = None,
        queue_timeout: float = 1.0,
    ) -> None:
        if half_life <= 0 or window <= 0 or ttl <= 0:
            raise ValueError("half_life, window and ttl must be positive")
        self.client = client
        self.prefix = prefix
        self.uri = uri
        self.half_life = half_life
        self.window = window
        self.ttl = ttl
        self._gate = gate
        self._queue_timeout = queue_timeout  # how long a call may wait for the gate
        self._ttl_ms = math.ceil(ttl * 1000)
        self.refused = 0  # states Redis refused to write or read in flushes (``_refused``)
        self.refused_keys: set[str] = set()  # the last ``sync``'s, by key
        self._refused_at = float("-inf")
        self._bitmap_ttl_ms = math.ceil((2 * window + BITMAP_SLACK) * 1000)

    async def start(self) -> None:
        """Preload the scripts (on every primary of a cluster)."""
        try:
            for script in (RISK, READ, SYNC):
                await self.client.script_load(script.body)
        except Exception as exc:
            raise self.failure(client_error(exc)) from exc

    async def close(self) -> None:
        pass

    def key(self, name: str) -> str:
        """The hash of the state ``name`` (a ``Keys`` string); its other keys extend it."""
        return f"{self.prefix}{{r:{name}}}"

    async def load(self, keys: Keys, now: float) -> Snapshot:
        epoch = int(now // self.window)
        principal = self.key(keys.principal)
        subnet = self.key(keys.subnet)
        # one read script per state (its keys share a slot), one LRANGE per template bucket
        # (the ring only with a sketch to compare it with)
        ring = (principal + ":ring",) if keys.templates else ()
        commands: list[tuple[Any, ...]] = [
            self._read(
                principal,
                *ring,
                principal + ":band",
                f"{principal}:sp:{epoch}",
                f"{principal}:sp:{epoch - 1}",
                lists=len(ring),
            ),
            self._read(subnet, f"{subnet}:m:{epoch}", f"{subnet}:m:{epoch - 1}"),
        ]
        if keys.fingerprint is not None:
            fingerprint = self.key(keys.fingerprint)
            commands.append(
                self._read(fingerprint, f"{fingerprint}:m:{epoch}", f"{fingerprint}:m:{epoch - 1}")
            )
        commands += (("LRANGE", self.key(t), 0, BUCKET_SIZE - 1) for t in keys.templates)
        replies = await self._run(commands)
        try:
            return self._snapshot(keys, replies, now)
        except (ValueError, TypeError, AttributeError, OverflowError, IndexError) as exc:
            # not what this module writes: another program's keys under the same prefix?
            raise self.failure(exc) from exc

    def _read(self, *keys: str, lists: int = 0) -> tuple[Any, ...]:
        return ("EVALSHA", READ.sha, len(keys), *keys, lists)

    def _snapshot(self, keys: Keys, replies: list[Any], now: float) -> Snapshot:
        if keys.templates:
            counters_flat, ring, state = replies[0]
        else:
            (counters_flat, state), ring = replies[0], []
        counters = _pairs(counters_flat)
        seen, tokens, temperature = (counters.get(f) for f in (b"_t", b"_m", b"_p"))
        band = None
        if state[0] is not None:
            level, _, held = state[0].partition(b":")
            band = Band(int(level), float(held))
        subnet_flat, subnet_bits = replies[1]
        if keys.fingerprint is None:
            fingerprint_values, fingerprint_members, rest = [0.0] * len(COHORT), 0, 2
        else:
            fingerprint_flat, fingerprint_bits = replies[2]
            fingerprint_values = self._decay(
                _pairs(fingerprint_flat), _COHORT_FIELDS, len(COHORT), now
            )
            fingerprint_members, rest = _bitmap(fingerprint_bits), 3
        neighbours: list[bytes] = []
        for entries in replies[rest:]:
            neighbours += entries
        return Snapshot(
            self._decay(counters, _PRINCIPAL_FIELDS, len(PRINCIPAL), now),
            None if seen is None else float(seen),
            -1 if tokens is None else int(tokens),
            -1.0 if temperature is None else float(temperature),
            ring[:RING_SIZE],
            _bitmap(state[1:]),
            band,
            self._decay(_pairs(subnet_flat), _COHORT_FIELDS, len(COHORT), now),
            _bitmap(subnet_bits),
            fingerprint_values,
            fingerprint_members,
            neighbours,
            bool(counters_flat),  # what risk.lua's create flag tests: the hash
        )

    def _decay(
        self, fields: dict[bytes, bytes], names: dict[bytes, int], size: int, now: float
    ) -> list[float]:
        return self._decayed(fields, names, size, now)[0]

    def _decayed(
        self, fields: dict[bytes, bytes], names: dict[bytes, int], size: int, now: float
    ) -> tuple[list[float], list[float]]:
        """The counters decayed to ``now``, and the part of them a repair put back (``^``
        fields beside them: see ``Update.restore``; empty when there is none)."""
        values = [0.0] * size
        restored: list[float] = []
        landmark = fields.get(b"_L")
        if landmark is None:
            return values, restored
        weighted = fields.get(b"_H")  # the half-life the sums were written with
        half_life = self.half_life if weighted is None else float(weighted)
        factor = 2.0 ** ((float(landmark) - now) / half_life)
        for name, value in fields.items():
            index = names.get(name)
            if index is not None:
                values[index] = float(value) * factor
            elif name[:1] == b"^" and (index := names.get(name[1:])) is not None:
                if not restored:
                    restored = [0.0] * size
                restored[index] = float(value) * factor
        return values, restored

    async def save(self, keys: Keys, update: Update) -> None:
        """One risk.lua call per state: counters, ring, band and bitmap together. Without
        ``update.create``, states that are not there are left alone (the subnet's is always
        written: one per network)."""
        now = update.now
        await self._run(
            [
                self._script(
                    state.keys,
                    now,
                    state.field_list(),
                    state.op_list(),
                    state.create,
                    state.ttl_ms,
                )
                for state in self.batched([(keys, update)], now).values()
            ]
        )

    async def sync(
        self,
        journal: Sequence[tuple[Keys, Update]],
        now: float,
        principals: Sequence[str],
        cohorts: Sequence[str],
        buckets: Sequence[str],
        extra: Sequence[tuple[Any, ...]] = (),
        worker: str = "",
        current: Collection[str] = (),
        batch: str = "",
        stamp: bool = True,
    ) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        """A worker's flush in one round trip: ``journal`` written as ``batched`` gathers it,
        then the states named read (what ``parse_principal`` and ``parse_cohort`` read, and a
        bucket's entries, in the order named), by one risk_sync.lua call (one per slot on a
        cluster). Arguments are few (a JSON spec, the keys, the entries pushed): redis-py
        packs each in Python, ~1.3 µs apiece, so this costs a small part of one command per
        state.

        Each principal and cohort written is stamped with ``worker``; one named in ``current``
        (whose copy at the caller took Redis's, and has been updated with everything the
        caller wrote since) is not read back when its stamp was already ``worker``'s: the
        reply is 0 then, for the copy is Redis's.

        The states go in calls of at most ``SYNC_STATES`` each (pipelined: still one round
        trip), so that no call holds Redis, and every other client of it, for long. Without
        ``stamp`` (a flush that reads nothing back) a written state keeps ``worker``'s stamp
        and loses any other's: a stamp says its worker's copy holds everything written to the
        state, which another's write makes untrue. A call
        that writes carries a marker named for ``batch`` (the caller's name for this journal,
        the same each time it is sent again): a call whose reply was lost and that is sent
        again finds its marker and writes nothing twice."""
        epoch = int(now // self.window)
        specs: dict[str, dict[str, Any]] = {}
        principal_reads = {"r": [":ring", ":band", f":sp:{epoch}", f":sp:{epoch - 1}"], "l": 1}
        cohort_reads = {"r": [f":m:{epoch}", f":m:{epoch - 1}"], "l": 0}
        for name in principals:
            specs[self.key(name)] = dict(principal_reads)
        for name in cohorts:
            specs[self.key(name)] = dict(cohort_reads)
        for name in buckets:
            specs[self.key(name)] = {"b": BUCKET_SIZE}
        # a flush leaves out a principal with nothing to write (a template pushed after the
        # fact: its request's own write is in the same journal)
        writes = {
            key: state
            for key, state in self.batched(journal, now).items()
            if state.fields or state.ops or state.band is not None
        }
        lists = {
            self.key(name) for keys, update in journal if update.template is not None
            for name in keys.templates
        }  # fmt: skip
        for key, batched in writes.items():
            # a state written and not asked for is not read ("z"): a batch sent again
            spec = specs.setdefault(key, {"r": [], "l": 0, "z": 1})
            spec.update(
                w=1,
                c=batched.create,
                x=[k[len(key) :] for k in batched.keys[1:]],
                f=batched.field_list(),
            )
            if batched.ttl_ms:
                spec["t"] = batched.ttl_ms
            if key not in lists:  # a hash: stamped, or another's stamp taken off
                spec["m" if stamp else "u"] = 1
        for name in current:
            stamped = specs.get(self.key(name))
            if stamped is not None and "m" in stamped:
                stamped["q"] = 1
        # Written states first, in the journal's order, then those only read: the calls that
        # write are cut alike from the same journal whatever is read with it, so a batch sent
        # again finds its markers (named for each call's first key).
        groups: dict[int, tuple[list[str], list[str]]] = {}
        clustered = self.clustered
        for key in [*writes, *(key for key in specs if key not in writes)]:
            slot = key_slot(key.encode()) if clustered else 0
            groups.setdefault(slot, ([], []))[key not in writes].append(key)
        chunks = [
            (part[i : i + SYNC_STATES], part is written)
            for written, read in groups.values() for part in (written, read)
            for i in range(0, len(part), SYNC_STATES)
        ]  # fmt: skip
        commands = []
        for keys, writing in chunks:
            entries: dict[bytes, int] = {}
            listed = []
            for key in keys:
                spec = specs[key]
                written = writes.get(key)
                if written is not None:
                    spec["o"] = _referred(written.op_list(), entries)
                listed.append(spec)
            marker = [f"{keys[0]}:~f:{batch}"] if batch and writing else []
            commands.append(
                (
                    "EVALSHA", SYNC.sha, len(keys) + len(marker), *keys, *marker, now,
                    self.half_life, self._ttl_ms, worker, orjson.dumps(listed), MARKER_MS,
                    *entries,
                )
            )  # fmt: skip
        answers, retried = await self._replies([*commands, *extra])
        if extra and retried:
            # NOSCRIPT: the scripts ran again as EVAL a round trip after the log's commands,
            # which so named writes not yet applied: appended again, after them
            answers[len(commands) :] = await self._execute(list(extra))
        # The states' writes failed: the caller sends the same batch again, and the calls
        # that did run (their reply lost, or other slots of a cluster) find their markers.
        # The log's commands only are replaced by their errors: the writes landed.
        for answer in answers[: len(commands)]:
            if isinstance(answer, Exception):
                raise self.failure(answer)
        replies: dict[str, Any] = {}
        for (keys, _), reply in zip(chunks, answers, strict=False):
            replies.update(zip(keys, reply, strict=True))
        refused = [(key, reply) for key, reply in replies.items() if isinstance(reply, Exception)]
        self.refused_keys = {key for key, _ in refused}
        self._refused(refused)
        return (
            [replies[self.key(name)] for name in principals],
            [replies[self.key(name)] for name in cohorts],
            [replies[self.key(name)] for name in buckets],
            answers[len(commands) :],
        )

    def _refused(self, refused: list[tuple[str, Exception]]) -> None:
        """States Redis refused in a flush (risk_sync.lua: each in its place, the others
        written): counted, and said at most every ``WARN_EVERY`` seconds, for a key of the
        wrong type is refused at every flush until someone removes it."""
        if not refused:
            return
        self.refused += len(refused)
        if time.monotonic() - self._refused_at >= WARN_EVERY:
            self._refused_at = time.monotonic()
            key, error = refused[0]
            logger.warning(
                "guardrail: Redis refused %d risk state(s) of a flush (%d so far), %r first: %s",
                len(refused), self.refused, key, error,
            )  # fmt: skip

    @property
    def clustered(self) -> bool:
        """A Redis Cluster: a pipeline's commands to different nodes run in no given order."""
        return isinstance(self.client, RedisCluster)

    async def log(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """``log_append`` and ``log_since`` commands in one round trip of their own, each
        one's error in its place."""
        return await self._execute(commands)

    def log_append(self, worker: str, names: Sequence[str]) -> tuple[Any, ...]:
        """Adds to the log of written states: ``worker`` wrote ``names`` (``Keys`` strings).
        Workers read it to know what the others changed (``log_since``)."""
        return (
            "XADD", self.key(LOG), "MAXLEN", "~", LOG_MAX, "*", "w", worker,
            "s", "\n".join(names),
        )  # fmt: skip

    def log_since(self, last: str | None) -> tuple[Any, ...]:
        """The log's entries after ``last`` (an entry id), or its last entry if None."""
        if last is None:
            return ("XREVRANGE", self.key(LOG), "+", "-", "COUNT", 1)
        # inclusive (an exclusive start needs Redis 6.2): the caller skips ``last`` itself
        return ("XRANGE", self.key(LOG), last, "+", "COUNT", LOG_READ)

    def batched(self, journal: Sequence[tuple[Keys, Update]], now: float) -> dict[str, _Batched]:
        """``journal``'s writes gathered per state (by key) at ``now``: counters summed (each
        weighted from its time to ``now``), bits set, entries pushed in order, the latest
        ``_t``, the last band and parameters; a state is created if any of its updates may
        create it. A state with nothing to write still has its keys' expiry renewed (``save``:
        any write to a principal renews its whole state)."""
        states: dict[str, _Batched] = {}
        ttl_ms = self._bitmap_ttl_ms
        rate = 1.0 / self.half_life

        def state(key: str, *related: str) -> _Batched:
            batched = states.get(key)
            if batched is None:
                batched = states[key] = _Batched([key, *related])
            return batched

        for keys, update in journal:
            weight = 2.0 ** ((update.now - now) * rate)
            epoch = int(update.now // self.window)
            create = update.create
            key = self.key(keys.principal)
            p = state(key, key + ":ring", key + ":band")
            if update.restore:
                p.restore(PRINCIPAL, update.principal, weight)
            else:
                p.add(PRINCIPAL, update.principal, weight)
            if update.seen:
                p.seen(update.now)
            if update.max_tokens >= 0:
                p.fields["_m"] = update.max_tokens
            if update.temperature >= 0:
                p.fields["_p"] = update.temperature
            if update.ring is not None:
                p.ops += ("L", 2, update.ring, RING_SIZE)
            if update.band is not None:
                level, held = update.band
                p.band = f"{level}:{held!r}"
                p.hold = update.hold
            if update.spread_bit is not None:
                p.bit(f"{key}:sp:{epoch}", update.spread_bit, ttl_ms)
            p.create |= create
            cohorts = [(keys.subnet, update.subnet, update.subnet_bit, True)]
            if keys.fingerprint is not None:
                cohorts.append(
                    (keys.fingerprint, update.fingerprint, update.fingerprint_bit, create)
                )
            for name, increments, member, may_create in cohorts:
                if not increments and member is None:
                    continue
                key = self.key(name)
                c = state(key)
                if update.restore:
                    c.restore(COHORT, increments, weight)
                else:
                    c.add(COHORT, increments, weight)
                if member is not None:
                    c.bit(f"{key}:m:{epoch}", member, ttl_ms)
                c.create |= may_create
            if update.template is not None:
                for template in keys.templates:
                    bucket = state(self.key(template))
                    bucket.ops += ("L", 1, update.template, BUCKET_SIZE)
                    bucket.create |= create
                    # its entries count within a window of their time (the engine's horizon):
                    # kept for the state's TTL, a bucket for each prompt analysed made Redis
                    # grow with the traffic over 8 half-lives (48 hours by default)
                    bucket.ttl_ms = ttl_ms
        return states

    def parse_principal(self, reply: Any, now: float) -> tuple[list[float], Remote]:
        """Counters decayed to ``now`` (zeros when absent) and the rest of a principal's state."""
        counters_flat, ring, (band_bytes, current, previous) = reply
        fields = _pairs(counters_flat)
        band = None
        if band_bytes is not None:
            level, _, held = band_bytes.partition(b":")
            band = Band(int(level), float(held))
        seen, tokens, temperature = (fields.get(f) for f in (b"_t", b"_m", b"_p"))
        remote = Remote(
            _bitmap((current,)),
            _bitmap((previous,)),
            ring[:RING_SIZE],
            (),
            None if seen is None else float(seen),
            -1 if tokens is None else int(tokens),
            -1.0 if temperature is None else float(temperature),
            band,
        )
        counters, remote.restored = self._decayed(fields, _PRINCIPAL_FIELDS, len(PRINCIPAL), now)
        return counters, remote

    def parse_cohort(self, reply: Any, now: float) -> tuple[list[float], Remote]:
        counters_flat, (current, previous) = reply
        counters, restored = self._decayed(_pairs(counters_flat), _COHORT_FIELDS, len(COHORT), now)
        return counters, Remote(_bitmap((current,)), _bitmap((previous,)), restored=restored)

    async def _run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """``_replies``, raising the first command's error as a StorageError."""
        replies, _ = await self._replies(commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise self.failure(reply)
        return replies

    async def _replies(self, commands: list[tuple[Any, ...]]) -> tuple[list[Any], bool]:
        """One round trip, each command's error in its place; on NOSCRIPT (a flushed,
        restarted or failed-over server), the scripts that were refused go again as EVAL,
        which also caches them. Only those: the rest of the pipeline was applied, once, and
        before them (the second value says so)."""
        replies = await self._execute(commands)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            retry = [_as_eval(commands[i]) for i in missing]
            for i, reply in zip(missing, await self._execute(retry), strict=True):
                replies[i] = reply
        return replies, bool(missing)

    def _script(
        self,
        keys: Sequence[str],
        now: float,
        fields: list[Any],
        ops: list[Any],
        create: bool,
        ttl_ms: int = 0,
    ) -> tuple[Any, ...]:
        return (
            "EVALSHA",
            RISK.sha,
            len(keys),
            *keys,
            now,
            self.half_life,
            ttl_ms or self._ttl_ms,
            1 if create else 0,
            len(fields) // 2,
            *fields,
            *ops,
        )

    async def _execute(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """One round trip; a command's error comes back in its place in the list."""
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        gate = self._gate
        async with (
            gated(gate, self._queue_timeout, f"risk store {self.uri!r}")
            if gate is not None
            else contextlib.nullcontext()
        ):
            try:
                replies: list[Any] = await pipe.execute(raise_on_error=False)
            except Exception as exc:
                raise self.failure(client_error(exc)) from exc
        return replies

    def failure(self, exc: BaseException) -> StorageError:
        return StorageError(f"risk store {self.uri!r}: {type(exc).__name__}: {exc}")


class _Batched:
    """One state's writes gathered for one call (``batched``)."""

    __slots__ = ("band", "bits", "create", "fields", "hold", "keys", "ops", "ttl_ms")

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.fields: dict[str, float] = {}
        self.ops: list[Any] = []
        self.band: str | None = None
        self.hold = 0.0  # the band's (``Update.hold``)
        self.create = False
        self.ttl_ms = 0  # when its keys expire (ms; 0: the store's TTL)
        self.bits: set[tuple[str, int]] = set()  # set once a call (setting a bit is idempotent)

    def add(self, names: Sequence[str], increments: Sequence[float], weight: float) -> None:
        fields = self.fields
        # a request's increments are mostly zeros (one hour of 24): both sides skipped in C
        kept = zip(compress(names, increments), filter(None, increments), strict=False)
        for name, value in kept:
            fields[name] = fields.get(name, 0.0) + value * weight

    def restore(self, names: Sequence[str], values: Sequence[float], weight: float) -> None:
        # "^name": risk_state.lua raises the counter's restored part to the value, at least
        fields = self.fields
        for name, value in zip(compress(names, values), filter(None, values), strict=False):
            floor = "^" + name
            fields[floor] = max(fields.get(floor, 0.0), value * weight)

    def seen(self, now: float) -> None:
        if now > self.fields.get("_t", float("-inf")):
            self.fields["_t"] = now

    def bit(self, key: str, bit: int, ttl_ms: int) -> None:
        # a flush's requests set the same bits again and again (a principal's on its network,
        # each member's on a cohort's): once each
        if (key, bit) in self.bits:
            return
        self.bits.add((key, bit))
        if key not in self.keys:
            self.keys.append(key)
        self.ops += ("B", self.keys.index(key) + 1, bit, ttl_ms)

    def field_list(self) -> list[Any]:
        return [item for pair in self.fields.items() for item in pair]

    def op_list(self) -> list[Any]:
        return self.ops if self.band is None else [*self.ops, "S", 3, self.band, self.hold]


def _referred(ops: list[Any], entries: dict[bytes, int]) -> list[Any]:
    """``ops`` with each pushed entry replaced by its number among ``entries`` (from 1, added
    if new): risk_sync.lua finds it among its arguments."""
    out = list(ops)
    i = 0
    while i < len(out):
        if out[i] == "L":
            out[i + 2] = entries.setdefault(out[i + 2], len(entries) + 1)
            i += 4
        else:
            i += 4
    return out


def _bitmap(chunks: Sequence[bytes | None]) -> int:
    """The OR of GET replies of bitmaps, bit ``i`` of the int being offset ``i``."""
    bits = 0
    for chunk in chunks:
        if chunk:
            bits |= int.from_bytes(chunk.translate(_REVERSED), "little")
    return bits


def _pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    """HGETALL's reply inside a script's: a flat list of field, value, field, value…"""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _as_eval(command: tuple[Any, ...]) -> tuple[Any, ...]:
    """EVALSHA sha … → EVAL body …"""
    return ("EVAL", _SCRIPTS[command[1]].body, *command[2:])
