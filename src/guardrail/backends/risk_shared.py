"""Risk state shared through Redis at memory speed (issue 14): no round trip on the request path.

Each worker reads and writes its own ``MemoryRiskStore``, as in memory mode, and journals what it
writes. Every ``interval`` one round trip sends the journal to Redis (``risk_sync.lua``: the
writes ``risk.lua`` would make, gathered per state) and appends the names of those states to a
log (a Redis stream; on a cluster, in a round trip of its own once the writes have answered).
Every ``read_every`` (200 ms under the default ``share_every: 50ms``: ``READ_EVERY_OTHERS``)
a flush first reads what the other workers appended to the log since its last read, then sends
its journal and reads back every state written since its last read, and a third round trip
reads the states this worker holds that the others changed. The worker then takes Redis's copy
of each state read, which holds what every worker wrote, plus what it wrote itself while the
round trip was under way.

That is possible without locks because every write commutes (forward-decayed counters add, bits
are OR-ed, lists are pushed): for counters, the copy here becomes ``here + (redis - here_then)``,
where ``here_then`` is this copy when the read left (everything written here by then is in Redis
too: a state with writes still in the journal is not read in the second round trip). Bits are
OR-ed in; a ring or a template bucket becomes Redis's with the entries pushed here since in
front; a band set elsewhere replaces this one unless one was set here since. A ring or a bucket
so keeps the entries Redis received last, flush by flush: within an interval, not always in the
order of the requests.

Why read less often than write: a read takes in every change made to a state since the last,
however many, at the same cost; with several workers serving the same principals, reading the
others' changes back was what grew the engine's cost a request with the workers. A flush that
only writes takes another worker's stamp off what it writes: a stamp says "that worker's copy
holds everything written to this state", which the write makes untrue (left there, it would
spare that worker the read).

How stale: what another worker wrote reaches this one within that worker's next flush and this
one's next read, ``share_every`` plus ``read_every`` (250 ms by default), for every state this
worker holds; the engine decides from a standing up to a second old anyway (``RESCORE_AFTER``).
A principal's first request on a worker is assessed on what that worker holds (nothing, or what
an earlier request left), its next ones on everything. A worker that dies loses its last
interval of evidence; limits are not here (their buckets are charged in Redis on every
request).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import operator
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from guardrail.backends.breaker import Breaker, BreakerOpen
from guardrail.backends.risk_memory import MemoryRiskStore, Remote
from guardrail.backends.risk_redis import RedisRiskStore
from guardrail.errors import StorageError
from guardrail.signals.state import (
    GN,
    GQ,
    GS,
    HOUR0,
    PRINCIPAL,
    PRM,
    REQ,
    Keys,
    Snapshot,
    Standing,
    Update,
)

logger = logging.getLogger("guardrail")

#: A state written here is read back at least this often (seconds), its stamp notwithstanding:
#: what a writer that does not stamp (a worker with share_every: request, in a rolling deploy)
#: or a failover that lost writes left unseen is seen within it.
READ_EVERY = 1.0

#: A flush reads back (see the module's docstring) at most this often (seconds), unless
#: ``share_every`` is longer: its writes are sent every interval all the same.
READ_EVERY_OTHERS = 0.2

#: Writes kept for Redis while it does not answer (a few seconds of a busy worker's traffic).
JOURNAL_MAX = 100_000
#: A failure to share is said at most this often (seconds): the flush is tried every interval.
WARN_EVERY = 60.0
#: Names whose log entry failed, kept for the next (each flush sends them again while the log
#: fails: ~40 KB at most, not megabytes every interval); past it the oldest are dropped, counted.
UNLOGGED_MAX = 1024


Clock = Callable[[], float]
#: States by kind (principals, cohorts, template buckets), in order: ``_written``'s answer.
Names = tuple[dict[str, None], dict[str, None], dict[str, None]]
Sleep = Callable[[float], Awaitable[None]]


class SharedRiskStore:
    """A ``LocalRiskStore`` whose state ``local`` is kept in step with ``remote`` (see the
    module's docstring) by ``flush``, called every ``interval`` seconds once started; a flush
    reads back when ``read_every`` seconds have passed since the last that did (0: each)."""

    def __init__(
        self,
        local: MemoryRiskStore,
        remote: RedisRiskStore,
        *,
        interval: float,
        read_every: float = 0.0,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        breaker: Breaker | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be above zero")
        self.local = local
        self.remote = remote
        self.interval = interval
        self.read_every = read_every
        self.half_life = local.half_life
        self.window = local.window
        self.ttl = local.ttl
        self.flushes = 0  # done, for tests and operators
        self.autoflush = True  # False: whoever set it calls flush (the simulator, on its clock)
        self.dropped = 0  # writes never shared: Redis did not answer for too long
        self.unlogged_dropped = 0  # names never logged: the log failed for too long
        self._clock = clock
        self._sleep = sleep
        self._breaker = breaker  # the storage's: no flush while it is open
        self._journal: list[tuple[Keys, Update]] = []
        # journals sent and not answered, oldest first, each with its name: sent again alone
        # and whole, under that name, so that what Redis did run of one is not run twice
        self._unanswered: list[tuple[str, list[tuple[Keys, Update]]]] = []
        self._named: tuple[int, str] = (os.getpid(), secrets.token_hex(8))
        self._last: str | None = None  # the last log entry read
        self._started = False  # the log's end is known: entries after it are read
        # named by the log, held here, not read again yet: at the end of the flush (or the
        # next, if it fails); each once, whatever the entries that name it
        self._stale: dict[str, None] = {}
        self._read_at = float("-inf")  # the last flush that read back
        # written by flushes that did not read back: read back by the next that does
        self._unread: Names = ({}, {}, {})
        # written, their log entry lost (the writes landed): named again by the next entry
        self._unlogged: dict[str, None] = {}
        self._flushing: asyncio.Lock | None = None
        self._task: asyncio.Task[None] | None = None
        self._failed_at = float("-inf")
        self._log_failed_at = float("-inf")

    @property
    def pending(self) -> int:
        """Writes not in Redis yet (or whose reply was lost): the journal and what failed."""
        return len(self._journal) + sum(len(journal) for _, journal in self._unanswered)

    # -- the request path: memory only -----------------------------------------------------

    def standing(self, principal: str, now: float) -> Standing | None:
        return self.local.standing(principal, now)

    def comparables(self, keys: Keys, now: float) -> tuple[list[bytes], list[bytes]]:
        return self.local.comparables(keys, now)

    async def load(self, keys: Keys, now: float) -> Snapshot:
        return await self.local.load(keys, now)

    async def save(self, keys: Keys, update: Update) -> None:
        await self.local.save(keys, update)
        self._journal.append((keys, update))

    def fold(
        self,
        keys: Keys,
        now: float,
        gap: float | None,
        hour: int,
        max_tokens: int,
        temperature: float,
        spread_bit: int,
        member_bit: int,
        cohort: list[float],
        prompt: bool = False,
        ring: bytes | None = None,
        template: bytes | None = None,
    ) -> None:
        self.local.fold(
            keys, now, gap, hour, max_tokens, temperature, spread_bit, member_bit, cohort,
            prompt, ring, template,
        )  # fmt: skip
        counts = [0.0] * len(PRINCIPAL)
        counts[REQ] = 1.0
        counts[HOUR0 + hour] = 1.0
        if gap is not None:
            counts[GN], counts[GS], counts[GQ] = 1.0, gap, gap * gap
        if prompt:
            counts[PRM] = 1.0
        # create=True though a fold comes before the limits: the principal has a standing, so
        # an admitted request made it here; Redis may have lost it (evicted, failed over), and
        # its evidence is put back there rather than dropped by every flush
        self._journal.append(
            (
                keys,
                Update(
                    now, counts, max_tokens, temperature, True, ring, spread_bit, None,
                    cohort, member_bit, cohort, member_bit, template,
                ),
            )
        )  # fmt: skip

    def push_template(self, keys: Keys, entry: bytes, now: float) -> None:
        self.local.push_template(keys, entry, now)
        self._journal.append((keys, _template_only(now, entry)))

    # -- in the background ---------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None and self.autoflush:  # first: a Redis down at startup waits
            self._task = asyncio.ensure_future(self._run())
        await self.remote.start()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            async with self._lock():  # a flush under way ends first: its journal has left
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            await self.flush()  # the last interval's evidence
        except StorageError as exc:
            logger.warning("guardrail: the last risk evidence was not shared: %s", exc)
        await self.local.close()

    async def _run(self) -> None:
        task = asyncio.current_task()
        while True:
            await self._sleep(self.interval)
            try:
                await self.flush()
            except Exception as exc:
                if task is not None and task.cancelling():
                    # redis-py can raise a connection error where it was cancelled: this
                    # task was asked to stop (``close``, a loop's shutdown), and only once
                    raise asyncio.CancelledError from exc
                if not isinstance(exc, StorageError):
                    logger.exception("guardrail: sharing risk evidence failed unexpectedly")
                elif time.monotonic() - self._failed_at >= WARN_EVERY:
                    self._failed_at = time.monotonic()
                    logger.warning(
                        "guardrail: risk evidence not shared (kept here, sent with the next "
                        "flush): %s",
                        exc,
                    )
            if task is not None and task.cancelling():
                # or returned as if nothing happened (Python 3.11's wait_for, inside redis-py,
                # drops a cancellation that lands as what it waits for completes)
                raise asyncio.CancelledError

    async def flush(self) -> None:
        """Send the journal and take Redis's copy of every state it touched; one at a time."""
        async with self._lock():
            breaker = self._breaker
            if breaker is not None and breaker.open:
                self._bound()  # the journal waits for Redis to be back
                raise BreakerOpen(breaker)
            try:
                await self._flush()
            except StorageError:
                if breaker is not None:
                    breaker.failed()
                raise

    @property
    def worker(self) -> str:
        """This process's name in the log and on Redis's stamps: a worker forked from a
        process that built the app (gunicorn --preload) must not share its parent's name."""
        pid, name = self._named
        if pid != os.getpid():
            self._named = pid, name = os.getpid(), secrets.token_hex(8)
        return name

    def _lock(self) -> asyncio.Lock:
        if self._flushing is None:
            self._flushing = asyncio.Lock()
        return self._flushing

    def _repaired(
        self,
        name: str,
        kind: int,
        theirs: list[float],
        mine: list[float],
        now: float,
        restored: Sequence[float] = (),
    ) -> list[float]:
        """What to add here to a state's counters (``mine``) to make them Redis's
        (``theirs``): what the others added. Redis can only hold more than this copy, which
        is what it held plus what this worker wrote since; where it holds less it lost some
        (evicted, failed over): this copy keeps its counts, and Redis is sent, with the next
        flush, what it should hold besides what was added since the loss: this copy less
        Redis's counts added (``theirs`` less its ``restored`` part), to raise its restored
        part to, not to add (``Update.restore``). Every worker holding the state finds the
        same loss: added, four workers' repairs made it count four times over; raised, the
        largest counts, the one whose copy had the fewest of the others' new writes in
        Redis when it read (the first to read after the loss: usually none)."""
        correction = list(map(operator.sub, theirs, mine))
        if len(theirs) != len(mine):
            raise ValueError("a state read back has counters of another size")
        if not correction or min(correction) >= -LOSS:  # the usual case: nothing lost
            return correction
        correction, lost = [], []
        restored = restored or [0.0] * len(theirs)
        for t, m, r in zip(theirs, mine, restored, strict=True):
            difference = t - m
            if difference < -LOSS * max(m, 1.0):
                correction.append(0.0)
                lost.append(m - (t - r))
            else:
                correction.append(difference)
                lost.append(0.0)
        if any(lost):
            keys = Keys(name, "", None, ()) if kind == 0 else Keys("", name, None, ())
            repair = (
                Update(now, lost, seen=False, restore=True)
                if kind == 0
                else Update(now, [], seen=False, subnet=lost, restore=True)
            )
            self._journal.append((keys, repair))
        return correction

    def _bound(self) -> None:
        """At most ``JOURNAL_MAX`` writes wait: a Redis down for long costs the oldest evidence
        first (a journal sent and unanswered goes whole: cut, it would be another batch)."""
        if len(self._journal) > JOURNAL_MAX:
            self.dropped += len(self._journal) - JOURNAL_MAX
            self._journal = self._journal[-JOURNAL_MAX:]
        while self._unanswered and self.pending > JOURNAL_MAX:
            _, journal = self._unanswered.pop(0)
            self.dropped += len(journal)

    async def _flush(self) -> None:
        # What failed before is read back with what it wrote; otherwise a flush reads back
        # every read_every (a clock stepped back must not stop the reads until it caught up).
        since_read = self._clock() - self._read_at
        reading = bool(self._unanswered) or not 0.0 <= since_read < self.read_every
        # The log first, in a round trip of its own: an entry read here was appended after its
        # writes were applied (``_send``), so they are in the states read below, and its names
        # among those can be passed over. Read after the states, another worker's write and
        # entry could land between the two (on a cluster, whose nodes answer apart, easily)
        # and the write would be passed over unread. Before the journal is taken: what is
        # written here meanwhile goes with it, and is in Redis when the states are read.
        if reading:
            now = self._clock()
            for name in await self._read_log():
                if self.local.holds(name, _kind(name), now):
                    self._stale[name] = None
        read = await self._write(reading)
        if read is not None:
            await self._read_changed(self._read_at, read)
        self.flushes += 1

    async def _write(self, reading: bool) -> set[str] | None:
        """The journal sent (after those that failed before), and with ``reading`` the states
        written since the last read read back; returns the names of those (None without)."""
        if self._journal:
            self._bound()  # the newest writes are kept; older unanswered batches go first
            self._unanswered.append((secrets.token_hex(8), self._journal))
            self._journal = []
        now = self._clock()
        # What failed before goes first, each journal alone and written only: read back before
        # the newer ones are in Redis too, a state would look like one Redis lost. The newest
        # reads back what they all wrote.
        read: Names = ({}, {}, {})
        replayed = False
        while len(self._unanswered) > 1:
            batch, journal = self._unanswered[0]
            written = _written(journal)
            await self._send(batch, journal, written, now, ({}, {}, {}))
            self._unanswered.pop(0)
            _merge(read, written)
            replayed = True
        batch, journal = self._unanswered[0] if self._unanswered else ("", [])
        written = _written(journal)
        if not reading:
            # written only (and logged): nothing read back, no stamp but this worker's left
            if journal:
                await self._send(batch, journal, written, now, ({}, {}, {}), stamp=False)
                self._unanswered.pop(0)
                _merge(self._unread, written)
            elif self._unlogged:
                await self._append([])
            return None
        _merge(read, written)
        _merge(read, self._unread)
        if replayed:
            # written here during the replays: not in Redis yet, so not read now (it would
            # look like a loss); read back with those writes next time (unsynced: a stamp of
            # this worker's must not spare that read)
            since = _pending(self._journal)
            for kind, names in enumerate(read):
                for name in [n for n in names if n in since]:
                    del names[name]
                    if kind < 2:
                        self.local.unsync(name, kind, now)
        await self._send(batch, journal, written, now, read)
        if self._unanswered:
            self._unanswered.pop(0)
        self._unread = ({}, {}, {})
        self._read_at = now
        return {name for names in read for name in names}

    async def _send(
        self,
        batch: str,
        journal: list[tuple[Keys, Update]],
        written: Names,
        now: float,
        read: Names,
        stamp: bool = True,
    ) -> None:
        """``journal`` (whose states ``written`` names: ``_written(journal)``) written under
        the name ``batch``, the states ``read`` names (principals, cohorts, buckets) read back
        and taken here, and the names written (with any an earlier entry failed to log)
        appended to the log after the writes: in the same round trip on one server, which runs
        a pipeline in order; in one of its own once they have answered on a cluster, whose
        nodes do not."""
        remote = self.remote
        principals, cohorts, buckets = read
        names = [n for ns in written for n in ns]
        logs = bool(journal or self._unlogged)
        after = logs and remote.clustered  # then ``_append``, once the writes have answered
        log = []
        if logs and not after:
            log = [remote.log_append(self.worker, [*self._unlogged, *names])]
        try:
            logged = await self._exchange(
                journal, now, principals, cohorts, buckets, log, batch, stamp
            )
        except StorageError:
            # The script may have run with its reply lost (a timeout, a reset): Redis then
            # stamped these states this worker's without this copy taking theirs. The journal
            # stays in ``_unanswered``, to be sent again under the same name.
            for name in (*principals, *written[0]):
                self.local.unsync(name, 0, now)
            for name in (*cohorts, *written[1]):
                self.local.unsync(name, 1, now)
            raise
        if after:
            await self._append(names)
        elif logs:
            self._logged(names, logged)

    async def _append(self, names: list[str]) -> None:
        """``names`` (and those whose entry failed before) logged in a round trip of their
        own: the writes landed, so a failure is not a reason to send them again."""
        try:
            logged = await self.remote.log(
                [self.remote.log_append(self.worker, [*self._unlogged, *names])]
            )
        except StorageError as exc:
            logged = [exc]
        self._logged(names, logged)

    def _logged(self, names: list[str], answers: list[Any]) -> None:
        if self._log_failed(answers):
            unlogged = self._unlogged
            for name in names:  # the latest failure last: the first kept
                unlogged.pop(name, None)
                unlogged[name] = None
            if len(unlogged) > UNLOGGED_MAX:
                over = len(unlogged) - UNLOGGED_MAX
                for name in list(itertools.islice(unlogged, over)):
                    del unlogged[name]
                self.unlogged_dropped += over
        elif self._unlogged:
            self._unlogged = {}

    async def _read_log(self) -> list[str]:
        """The names of the states the other workers logged since this worker's last read
        (nothing at the first: it finds the log's end). A log that cannot be read is read from
        the same place next time."""
        try:
            (reply,) = await self.remote.log([self.remote.log_since(self._last)])
        except StorageError as exc:
            reply = exc
        if self._log_failed([reply]):
            if not self._started:
                # The log's end unknown, the states read back now, the next first read would
                # take the entries after them for entries before: the flush waits (nothing
                # has been sent).
                raise reply if isinstance(reply, StorageError) else self.remote.failure(reply)
            return []
        entries = [e for e in reply or [] if _text(e[0]) != self._last]
        if entries:
            self._last = _text(entries[-1][0])
        elif self._last is None:
            self._last = "0-0"  # an empty log: everything after its start
        names: list[str] = []
        if self._started:
            for _, values in entries:  # redis-py's reply: (id, {field: value})
                if _text(values.get(b"w", b"")) != self.worker:
                    names += _text(values.get(b"s", b"")).split("\n")
        self._started = True
        return names

    def _log_failed(self, answers: list[Any]) -> bool:
        """Says (now and then) that the log could not be written or read (the writes landed:
        their names go with the next entry)."""
        failed = [answer for answer in answers if isinstance(answer, Exception)]
        if failed and time.monotonic() - self._log_failed_at >= WARN_EVERY:
            self._log_failed_at = time.monotonic()
            failure = failed[0]
            if not isinstance(failure, StorageError):
                failure = self.remote.failure(failure)
            logger.warning("guardrail: the risk log failed: %s", failure)
        return bool(failed)

    async def _read_changed(self, now: float, read: set[str]) -> None:
        """Reads again what this worker holds of the states the log named (``_stale``), but
        for those just ``read`` and those written here since: those are read back with their
        own write at the next flush."""
        # what the other workers wrote since: read again what this worker holds of it (and has
        # not written since: that is read back with its own write at the next flush)
        pending = _pending(self._journal)
        changed: Names = ({}, {}, {})
        log, self._stale = self._stale, {}
        for name in log:
            if name in pending or name in read:
                continue
            kind = _kind(name)
            if self.local.holds(name, kind, now):
                changed[kind][name] = None
        if any(changed):
            try:
                await self._exchange([], now, *changed, [])
            except StorageError:
                self._stale = {name: None for names in changed for name in names}
                raise

    async def _exchange(
        self,
        journal: list[tuple[Keys, Update]],
        now: float,
        principals: dict[str, None],
        cohorts: dict[str, None],
        buckets: dict[str, None],
        extra: list[tuple[Any, ...]],
        batch: str = "",
        stamp: bool = True,
    ) -> list[Any]:
        """One round trip: ``journal`` written, the states named read back and taken here
        (``absorb_*``), then the ``extra`` log commands run; returns their answers (each
        error in its place)."""
        local, remote = self.local, self.remote
        # what is held here as the journal leaves: Redis's copy less this is what others added
        held = {name: local.held_principal(name, now) for name in principals}
        held_cohorts = {name: local.held_cohort(name, now) for name in cohorts}
        # copies that took Redis's (within READ_EVERY) and were written here since: not read
        # back if nobody else wrote them meanwhile (Redis's stamp)
        current: set[str] = set()
        if journal:
            current.update(n for n in principals if local.synced(n, 0, now, READ_EVERY))
            current.update(n for n in cohorts if local.synced(n, 1, now, READ_EVERY))
        read_principals, read_cohorts, read_buckets, logged = await remote.sync(
            journal, now, list(principals), list(cohorts), list(buckets), extra,
            self.worker, current, batch, stamp,
        )  # fmt: skip
        if remote.refused_keys:
            # refused, perhaps part way, written only or read too: a hash may be stamped this
            # worker's though this copy does not hold what Redis does; read back next time
            for keys, _ in journal:
                for name, kind in ((keys.principal, 0), (keys.subnet, 1), (keys.fingerprint, 1)):
                    if name and remote.key(name) in remote.refused_keys:
                        local.unsync(name, kind, now)
        since = self._journal  # written here during the round trip
        rings, banded, pushed = _newer(since)
        for name, reply in zip(principals, read_principals, strict=True):
            mine = held[name]
            if isinstance(reply, Exception):
                local.unsync(name, 0, now)  # refused (said by ``sync``): read back next time
                continue
            if mine is None or reply == 0 or not reply[0]:
                continue  # not held here, Redis's already, or not in Redis (refused, lost): kept
            counters, state = remote.parse_principal(reply, now)
            state.newer = rings.get(name, ())
            correction = self._repaired(name, 0, counters, mine, now, state.restored)
            local.absorb_principal(name, now, correction, state, name in banded)
        for name, reply in zip(cohorts, read_cohorts, strict=True):
            own = held_cohorts[name]
            if isinstance(reply, Exception):
                local.unsync(name, 1, now)
                continue
            if own is None or reply == 0 or not reply[0]:
                continue
            counters, state = remote.parse_cohort(reply, now)
            repaired = self._repaired(name, 1, counters, own, now, state.restored)
            local.absorb_cohort(name, now, repaired, state)
        for name, entries in zip(buckets, read_buckets, strict=True):
            if isinstance(entries, Exception):
                continue
            local.absorb_bucket(name, now, Remote(entries=entries, newer=pushed.get(name, ())))
        return logged


#: Redis holding less than this copy by more than this share of a counter is a loss (an
#: eviction, a failover), not float32 against float64 rounding.
LOSS = 1e-3


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _kind(name: str) -> int:
    """0 a principal, 1 a cohort (a subnet, a client fingerprint), 2 a template bucket, by
    the prefix of its ``Keys`` string."""
    prefix = name[:2]
    return 1 if prefix in ("s:", "f:") else 2 if prefix == "t:" else 0


def _written(
    journal: list[tuple[Keys, Update]],
) -> Names:
    """The principals, cohorts and template buckets ``journal`` writes, in order: the
    states a flush of it reads back."""
    principals: dict[str, None] = {}
    cohorts: dict[str, None] = {}
    buckets: dict[str, None] = {}
    for keys, update in journal:
        if update.principal or update.ring is not None or update.band is not None:
            principals[keys.principal] = None
        if update.subnet:
            cohorts[keys.subnet] = None
        if keys.fingerprint is not None and update.fingerprint:
            cohorts[keys.fingerprint] = None
        if update.template is not None:
            buckets.update(dict.fromkeys(keys.templates))
    return principals, cohorts, buckets


def _merge(
    into: Names,
    names: Names,
) -> None:
    """``_written``'s names added to ``into``, kind by kind, in order."""
    for kept, more in zip(into, names, strict=True):
        kept.update(more)


def _pending(journal: list[tuple[Keys, Update]]) -> set[str]:
    """Every state ``journal`` writes to (as ``_written`` names them): read back with that
    write at the next flush, not before. A name an update only mentions (a template pushed
    after the fact names its principal and subnet, and writes its buckets alone) is not one."""
    return {name for names in _written(journal) for name in names}


def _template_only(now: float, entry: bytes) -> Update:
    """A template pushed after the fact (a folded request, once admitted): nothing else."""
    return Update(now, [], seen=False, template=entry)


def _newer(
    since: list[tuple[Keys, Update]],
) -> tuple[dict[str, tuple[bytes, ...]], set[str], dict[str, tuple[bytes, ...]]]:
    """From the journal written during a round trip: each principal's ring entries and each
    bucket's entries, newest first, and the principals whose band was set."""
    rings: dict[str, tuple[bytes, ...]] = {}
    banded: set[str] = set()
    pushed: dict[str, tuple[bytes, ...]] = {}
    for keys, update in since:
        if update.ring is not None:
            rings[keys.principal] = (update.ring, *rings.get(keys.principal, ()))
        if update.band is not None:
            banded.add(keys.principal)
        if update.template is not None:
            for name in keys.templates:
                pushed[name] = (update.template, *pushed.get(name, ()))
    return rings, banded, pushed
