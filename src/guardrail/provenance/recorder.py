"""The served outputs into the index, off the request path.

The request hands ``(subject, output, time)`` to ``Recorder.offer`` and goes on: a bounded
queue, which a full one refuses (the newest output is dropped, counted and logged: never
silently). One task, started with the middleware (lifespan, or the first request), drains
it: it parses and sketches BATCH outputs at a time, together (``Sketcher.sketch_many``: ~14
µs a KB of CPU with numpy, normalisation included, ~15x that without: a warning says so at
start), yielding to the event loop between batches, and adds them to the index. Under light
load the task is not woken for each output but once BATCH wait (or the queue is full, or
``settled``, ``close`` or ``save_every`` comes): one text sketched alone costs ~24 µs a KB
(some twenty numpy calls of ~1 µs each, whatever its length) and each wake-up of the task
as much again. Outputs waiting for a batch delay nothing anyone can read: what is queued is
taken in before each save and flush, and the index is read from what is saved. That task is
the index's only user (``ProvenanceIndex`` is not thread-safe): while it saves, in a thread
(``asyncio.to_thread``: the file write must not block the loop), nothing else touches the
index, and the queue takes what arrives meanwhile. It saves every ``save_every`` (expired
entries dropped first) and at shutdown, atomically (a temporary file, then a rename).

Each worker process saves a file of its own: ``{worker}`` in ``provenance.path`` becomes the
first slot number whose lock file (``<file>.lock``, ``flock``) no other process holds, so
workers never write one file, and a restarted worker takes up its slot's file and goes on
with it (the lock goes with the process, however it ends). ``guardrail trace find --index``
merges the files of every slot (``--index 'guardrail-provenance-*.grprov'``).

With a ``store`` (a Redis storage, index_redis.py) there are no files nor slots: the task
hands the sketches to the store, which flushes them to Redis every ``save_every``, sooner
once ``FLUSH_AT`` wait, and at shutdown; every worker feeds the one index there.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from guardrail.errors import ProvenanceError
from guardrail.provenance.capture import texts
from guardrail.provenance.index import ProvenanceIndex
from guardrail.provenance.sketch import Sketcher

if TYPE_CHECKING:  # redis is an optional dependency
    from guardrail.provenance.index_redis import RedisIndexWriter

logger = logging.getLogger("guardrail")

#: Outputs waiting to be sketched; past this many, the newest are dropped (and counted).
QUEUE_SIZE = 10_000
#: Outputs sketched between two yields to the event loop, together (8 outputs of 1 KB:
#: ~110 µs of CPU).
BATCH = 8
#: Seconds between two warnings of dropped outputs.
WARN_EVERY = 10.0
#: Slots tried for ``{worker}`` before giving up.
MAX_SLOTS = 4096
_PLACEHOLDER = "{worker}"

_Item = tuple[str, bytes | list[str], float]


class _Settle:
    """In the queue, from ``settled``: what was queued before it is taken in now, and then
    ``done`` says so."""

    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Recorder:
    """Sketches served outputs into a ``ProvenanceIndex`` and saves it to its worker's file."""

    def __init__(
        self,
        path: str,
        *,
        capacity: int,
        retention: float,
        save_every: float,
        sketcher: Sketcher,
        clock: Callable[[], float],
        queue_size: int = QUEUE_SIZE,
        store: RedisIndexWriter | None = None,
    ) -> None:
        self.store = store
        if store is None and _PLACEHOLDER not in path:
            raise ProvenanceError(f"the index path must hold {_PLACEHOLDER}", path)
        self.pattern = path
        self.path: Path | None = None  # this worker's file, once a slot is claimed
        self.index = ProvenanceIndex(capacity, retention, sketcher)
        self.save_every = save_every
        self.clock = clock
        self.dropped = 0
        """Outputs dropped because the queue was full."""
        self.added = 0
        """Texts added to the index."""
        self.saves = 0
        self._queue: asyncio.Queue[_Item | _Settle | None] = asyncio.Queue(queue_size)
        self._wake = asyncio.Event()  # wakes the task: a batch waits, or it is asked to come
        self._asked = 0  # markers (settled, close) in the queue, not yet taken
        self._task: asyncio.Task[None] | None = None
        self._lock: IO[bytes] | None = None
        self._dirty = False
        self._due = float("inf")
        self._warned_at = float("-inf")
        self._unwarned = 0
        self._closed = False
        self._saving = False  # a save is being written, in a thread

    # -- the request side ------------------------------------------------------------------

    def offer(self, subject: str, output: bytes | list[str], ts: float) -> None:
        """Queue an output for sketching. Never blocks: a full queue drops it, counted."""
        try:
            self._queue.put_nowait((subject, output, ts))
            if self._queue.qsize() >= BATCH or self._queue.full():
                self._wake.set()
        except asyncio.QueueFull:
            self.dropped += 1
            self._unwarned += 1
            now = self.clock()
            if now - self._warned_at >= WARN_EVERY:
                self._warned_at = now
                logger.warning(
                    "guardrail: provenance queue full (%d outputs waiting): %d served "
                    "output(s) not sketched since the last warning, %d in all; they cannot "
                    "be traced",
                    self._queue.qsize(),
                    self._unwarned,
                    self.dropped,
                )
                self._unwarned = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Claim a worker slot, take up its file, and start sketching."""
        if self._task is not None or self._closed:
            return
        if self.store is not None:
            await self.store.flush(self.clock())  # names its index; a Redis down is retried
        elif self.path is None:
            await asyncio.to_thread(self._claim)
        if not self.index.sketcher.vectorised:
            logger.warning(
                "guardrail: provenance: numpy is not installed: outputs are sketched in pure "
                "Python, several times slower (the same sketches); pip install "
                "'guardrail[provenance]'"
            )
        self._due = self.clock() + self.save_every
        self._task = asyncio.create_task(self._run(), name="guardrail-provenance-recorder")

    async def close(self) -> None:
        """Sketch what is queued, save, and release the slot."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            await self._queue.put(None)  # the task drains the queue first, then saves
            self._asked += 1  # counted once in the queue: a put cancelled put nothing
            self._wake.set()
            await asyncio.shield(self._task)
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None
        if self._unwarned:
            logger.warning(
                "guardrail: provenance: %d served output(s) were dropped (queue full) in all",
                self.dropped,
            )
        if self.store is not None and self.store.pending:
            logger.error(
                "guardrail: provenance: %d entries could not be written to Redis (%s) before "
                "shutdown; they are lost",
                self.store.pending,
                self.store.uri,
            )

    def exit_sync(self) -> None:
        """The process is ending and nothing closed the recorder (no lifespan): sketch what is
        queued and save, synchronously (``guardrail.audit.at_exit`` calls this through the
        middleware). Skipped while the task's own save is being written: that one completes.
        A Redis store is written with a blocking client (no event loop runs its own)."""
        if self.store is not None:
            if not self._closed:
                self._closed = True
                self._drain()
                self.store.flush_blocking(self.clock())
            return
        if self._closed or self._saving or self.path is None:
            return
        self._closed = True
        self._drain()
        self.index.expire(self.clock())
        try:
            self._write(self.path)
        except OSError as exc:
            logger.error("guardrail: provenance: cannot save the index to %s: %s", self.path, exc)
            return
        finally:
            if self._lock is not None:  # the slot is free: nothing here saves after this
                self._lock.close()
                self._lock = None
        self.saves += 1
        logger.info("guardrail: provenance: index saved to %s as the process ended", self.path)

    def _drain(self) -> None:
        """Sketch what is queued, here and now (the process is ending)."""
        queued: list[_Item] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if isinstance(item, tuple):
                queued.append(item)
        self._add(queued)

    async def settled(self) -> None:
        """Wait until every output offered so far is in the index (and saved, if due); not
        for those offered meanwhile."""
        task = self._task
        if task is None or task.done():
            return
        marker = _Settle()
        await self._queue.put(marker)  # fewer than BATCH may wait: the task takes them in
        self._asked += 1  # counted once in the queue: a put cancelled put nothing
        self._wake.set()
        await asyncio.wait([marker.done, task], return_when=asyncio.FIRST_COMPLETED)

    # -- the task --------------------------------------------------------------------------

    async def _run(self) -> None:
        queue, wake = self._queue, self._wake
        task = asyncio.current_task()
        stop = False
        while not stop:
            if queue.qsize() < BATCH and not queue.full() and not self._asked:
                # Idle, the task still wakes when a save is due. Cleared only here, after
                # the state was read: whatever changes it afterwards sets it again.
                wake.clear()
                wait = min(self.save_every, max(0.0, self._due - self.clock()))
                try:
                    async with asyncio.timeout(wait):
                        await wake.wait()
                except TimeoutError:
                    pass
            batch: list[_Item] = []
            marker: _Settle | None = None
            while len(batch) < BATCH:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if not isinstance(item, tuple):
                    self._asked -= 1
                    stop, marker = item is None, item
                    break  # what was offered after it waits for the next round
                batch.append(item)
            if batch:
                self._add(batch)
                await asyncio.sleep(0)  # the requests waiting on the loop go first
            now = self.clock()
            if stop or self._save_due(now):
                self._due = now + self.save_every
                await self._save(now, last=stop)
                if task is not None and task.cancelling():
                    # redis-py can raise a connection error where it was cancelled, which the
                    # index's flush takes for a failed write: asked to stop, the task stops
                    raise asyncio.CancelledError
            if marker is not None and not marker.done.done():
                marker.done.set_result(None)

    def _save_due(self, now: float) -> bool:
        return now >= self._due or (self.store is not None and self.store.due(now))

    def _add(self, items: list[_Item]) -> None:
        """Sketch the items' texts together (``Sketcher.sketch_many``: ~2x less CPU a KB than
        one by one) and keep their sketches."""
        target = self.store if self.store is not None else self.index
        entries: list[tuple[str, str, float]] = []
        for subject, output, ts in items:
            try:
                entries += [(subject, text, ts) for text in texts(output)]
            except Exception:  # one odd output must not stop the recorder
                logger.exception("guardrail: provenance: an output could not be read")
        sketcher = target.sketcher
        try:
            sketches = sketcher.sketch_many([text for _, text, _ in entries])
        except Exception:  # nor cost the others theirs: text by text, the odd one logged
            sketches = [_sketch(sketcher, text) for _, text, _ in entries]
        for (subject, _, ts), sketch in zip(entries, sketches, strict=True):
            if sketch is not None and target.add_sketch(subject, sketch, ts):
                self.added += 1
                self._dirty = True

    async def _save(self, now: float, *, last: bool = False) -> None:
        if self.store is not None:
            if await self.store.flush(now, last=last):
                self.saves += 1
            return
        if self.index.expire(now):
            self._dirty = True
        if not self._dirty or self.path is None or self._lock is None:
            return  # nothing new, or the slot was given up (exit_sync)
        self._saving = True
        try:
            await asyncio.to_thread(self._write, self.path)
        except OSError as exc:
            logger.error("guardrail: provenance: cannot save the index to %s: %s", self.path, exc)
            return
        finally:
            self._saving = False
        self._dirty = False
        self.saves += 1

    def _write(self, path: Path) -> None:
        """The names of expired subjects forgotten, then the index saved (in a thread, but for
        the process's end: nothing else touches the index meanwhile)."""
        self.index.compact_names()
        self.index.save(path)

    # -- the worker's slot -----------------------------------------------------------------

    def _claim(self) -> None:
        """The first slot whose lock nobody holds (in a thread: file I/O); its file, if a
        worker before this one saved it, is taken up."""
        for slot in range(MAX_SLOTS):
            path = Path(self.pattern.replace(_PLACEHOLDER, str(slot)))
            try:
                lock = path.with_name(path.name + ".lock").open("ab")
            except OSError as exc:  # refused at startup: no index could ever be saved here
                where = str(path.with_name(path.name + ".lock"))
                raise ProvenanceError(
                    f"cannot create a worker's lock: {exc.strerror}", where
                ) from exc
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            self.path, self._lock = path, lock
            self._take_up(path)
            logger.info("guardrail: provenance: this worker saves its index to %s", path)
            return
        raise ProvenanceError(f"no free worker slot among {MAX_SLOTS}", self.pattern)

    def _take_up(self, path: Path) -> None:
        if not path.exists():
            return
        try:
            saved = ProvenanceIndex.load(path)
        except ProvenanceError as exc:
            kept = self._set_aside(path)
            logger.error("guardrail: provenance: %s; moved to %s, starting afresh", exc, kept)
            return
        if saved.sketcher.params != self.index.sketcher.params:
            kept = self._set_aside(path)
            logger.warning(
                "guardrail: provenance: %s was sketched with another key (provenance.key); "
                "moved to %s, starting afresh",
                path,
                kept,
            )
            return
        saved.bound(self.index.capacity, self.index.retention)
        self.index = saved

    @staticmethod
    def _set_aside(path: Path) -> Path:
        kept = path.with_name(f"{path.name}.{int(os.stat(path).st_mtime)}.old")
        path.replace(kept)
        return kept


def _sketch(sketcher: Sketcher, text: str) -> bytes | None:
    try:
        return sketcher.sketch(text)
    except Exception:
        logger.exception("guardrail: provenance: an output could not be sketched")
        return None
