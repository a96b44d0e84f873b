"""AuditLog: the request path hands records over without waiting; one task writes them in batches.

Nothing is lost silently. A record that cannot be queued (queue full, log closed) or written
(sink still failing after the retries) is counted, logged, and reported as ``"dropped": N`` in
the next record that does get written. The hash chain is assigned at write time, so it always
links the lines that actually reached the sink.

A sink that stops answering holds up neither startup nor shutdown: reading the end of the trail
gives up after ``timeout`` (the chain stays unknown and is read again before the first write),
and :meth:`AuditLog.close` gives up after ``close_timeout``, counting what it could not write.
While serving, a failing batch is retried (bounded backoff) for as long as the queue has room:
records are lost to an outage only when the queue overflows.

Records name their writer (``"writer"``: host, process id, start time and a random suffix, see
:func:`writer_id`) and carry its sequence number (``"seq"``, 1, 2, ... per writer): several
writers can share a trail (a Redis stream), each with a hash chain of its own, and a sink that
knows the sequence appends idempotently (a batch re-sent after a timeout is not duplicated).

Without lifespan events nothing calls :meth:`AuditLog.close`: :mod:`guardrail.audit.at_exit` then
writes what is still queued when the process ends (:meth:`AuditLog.exit_sync`).

With a ``chain_key`` the chain is keyed (:mod:`guardrail.audit.chain`) and a writer that stops
(:meth:`AuditLog.close`, :meth:`AuditLog.exit_sync`) ends its chain with a seal: the last line
then vouches for itself, so records cut from the end of the trail are noticed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from guardrail.audit.chain import SEALED, chain_for
from guardrail.audit.record import encode, format_ts
from guardrail.audit.sinks import Sink
from guardrail.errors import AuditError

log = logging.getLogger("guardrail.audit")

_YIELD_EVERY = 64
_REPORTED = 'reported as "dropped" in the next record written'
_Item = tuple[Mapping[str, Any], int]  # (record, records lost just before it was queued)
_LOUD_RETRIES = 8  # past this many, a failing batch is reported once per warn_every


def writer_id(now: float | None = None) -> str:
    """``host:pid:20261203T120406Z:1a2b``: which machine and process wrote, since when (a pid is
    reused across restarts and containers), and 16 random bits so two writers never share one."""
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{socket.gethostname()}:{os.getpid()}:{started}:{secrets.token_hex(2)}"


class AuditLog:
    def __init__(
        self,
        sink: Sink,
        *,
        hash_chain: bool = True,
        queue_size: int = 10_000,
        batch_size: int = 512,
        retries: int = 4,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        warn_every: float = 10.0,
        timeout: float = 5.0,
        close_timeout: float = 20.0,
        writer: str | None = None,
        chain_key: bytes | None = None,
    ) -> None:
        if chain_key is not None and not hash_chain:
            raise AuditError("a chain_key keys the hash chain: it needs hash_chain on")
        self.sink = sink
        self.hash_chain = hash_chain
        self._chain = chain_for(chain_key)
        self.written = 0
        """Records written to the sink so far."""
        self.lost = 0
        """Records lost so far (overflow, closed, sink failure, unserialisable)."""
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue(queue_size)
        self._batch_size = batch_size
        self._retries = retries
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._sleep = sleep
        self._monotonic = monotonic
        self._warn_every = warn_every
        self._timeout = timeout  # reading the end of the trail; closing the sink
        self._close_timeout = close_timeout  # close() draining the queue into the sink
        self._gave_up = False  # closing, and the sink failed a batch through every retry
        self._in_hand = 0  # records of the batch being written not yet written nor counted lost
        self._last_warning = float("-inf")
        self._last_retry_warning = float("-inf")
        self._unwarned = 0
        self._reason = ""
        self._pending_loss = 0  # lost since the last record that made it into the queue
        self._carried = 0  # lost while writing, owed to the next record written
        self._prev: str | None = None  # None: not yet read from the sink
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self.writer: str | None = writer
        """This writer's id: :func:`writer_id`, chosen at :meth:`start` in the serving process,
        unless given (then it must be unique to this run: a sink skips sequence numbers it has)."""
        self._named = writer is not None
        self._pid = 0
        self._seq = 0  # the "seq" of the last line handed to the sink
        self._taken: list[_Item] = []  # the batch being serialised ...
        self._lines: list[str] = []  # ... then written (for exit_sync)
        self.emitted = 0
        """Records queued so far."""
        self._settled = 0  # queued records written or counted lost: caught up when emitted
        self._caught_up: asyncio.Event | None = None
        self._abandon = False  # close() stopped the writer: exit_sync must not write
        self._late: list[Mapping[str, Any]] | None = None  # emitted during exit_sync
        self.before_exit: Callable[[], None] | None = None
        """Called first by :meth:`exit_sync` (the middleware writes its held refusal counts)."""
        self.after_batch: Callable[[AuditLog], None] | None = None
        """Called by the writer task after each batch (metrics read the counts and the queue)."""

    async def start(self) -> None:
        """Reads where the trail ends (to continue its chain) and starts the writer task."""
        if self._closed:
            return
        if self._pid != os.getpid():
            # A fork (gunicorn --preload) is another writer: a chain and sequence of its own.
            self._pid = os.getpid()
            if not self._named or self._seq:
                self.writer = writer_id()
            self._seq = 0
            self._prev = None
            log.info("audit: this process writes as writer %s", self.writer)
        if self._task is None or self._task.done():
            if self.hash_chain and self._prev is None:
                await self._continue_chain()
            self._task = asyncio.create_task(self._run(), name="guardrail-audit-writer")

    @property
    def queued(self) -> int:
        """Records waiting in the queue."""
        return self._queue.qsize()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has drained the queue and closed the sink."""
        return self._closed

    def emit(self, record: Mapping[str, Any]) -> None:
        """Queues ``record`` (which the log now owns: do not mutate it). Never blocks or raises."""
        if self._closing:
            if self._late is not None:  # the process is ending: exit_sync writes it
                self._late.append(record)
                return
            self._lose(1, "emitted after the audit log was closed; not in the trail")
            return
        try:
            self._queue.put_nowait((record, self._pending_loss))
        except asyncio.QueueFull:
            self._pending_loss += 1
            self._lose(1, f"audit queue full; {_REPORTED}")
            return
        self._pending_loss = 0
        self.emitted += 1

    async def caught_up(self, patience: float) -> None:
        """Waits (at most ``patience`` seconds) until every record emitted so far is written or
        counted lost. Returns at once when nothing is pending, which is most of the time."""
        if self._settled >= self.emitted or self._task is None or self._task.done():
            return
        if self._caught_up is None:
            self._caught_up = asyncio.Event()
        target = self.emitted
        try:
            async with asyncio.timeout(patience):
                while self._settled < target:
                    await self._caught_up.wait()
        except TimeoutError:
            pass

    def _settle(self, count: int) -> None:
        self._settled += count
        if self._caught_up is not None:
            self._caught_up.set()
            self._caught_up = asyncio.Event()  # the next waiters wait for the next batch

    async def flush(self) -> None:
        """Waits until everything emitted so far has been written (or counted as lost)."""
        await self.start()
        await self._queue.join()

    async def close(self) -> None:
        """Writes everything queued so far, then closes the sink.

        Bounded: once a batch has failed through every retry, the records still queued are not
        tried (the sink is down); and after ``close_timeout`` the writer is stopped. Either way
        what was not written is counted as lost and logged."""
        if self._closed:
            return
        self._closing = True
        await self.start()
        assert self._task is not None
        try:
            async with asyncio.timeout(self._close_timeout):
                if (seal := self._seal("close")) is not None:
                    await self._queue.put(seal)
                await self._queue.put(None)  # waits for room: the writer task keeps draining
                await asyncio.shield(self._task)
        except TimeoutError:
            self._abandon = True
            self._task.cancel()
            await asyncio.wait([self._task], timeout=self._timeout)
            abandoned = self._drain_queue()
            log.error(
                "audit: the sink did not take the queued records within %gs; gave up on "
                "%d record(s) (counted as lost)",
                self._close_timeout,
                abandoned,
            )
        unreported = self._pending_loss + self._carried
        if unreported:
            log.error(
                "audit: %d record(s) lost after the last written record; the trail "
                "cannot show them",
                unreported,
            )
        self._warn(force=True)
        self._closed = True
        try:
            async with asyncio.timeout(self._timeout):
                await self.sink.close()
        except TimeoutError:
            log.error("audit: the sink did not close within %gs; left as it is", self._timeout)

    def exiting(self) -> None:
        """The process was told to stop (a signal, no lifespan): hand over what is held back
        (:attr:`before_exit`) while the writer still runs."""
        if self.before_exit is not None and not self._closing:
            self.before_exit()

    def exit_sync(self) -> None:
        """The process is ending and nothing closed this log (no lifespan): writes the batch in
        hand and everything still queued, synchronously, to a sink that can (file, stdout,
        Redis); what cannot be written is counted and logged at ERROR. Runs once."""
        if self._closed or self._late is not None:
            return
        self._closing = True
        self._late = []
        if self.before_exit is not None:
            try:
                self.before_exit()
            except Exception:
                log.exception("audit: writing the held refusal counts at exit failed")
        queued: list[_Item] = [] if self._lines else list(self._taken)
        while True:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if item is not None:
                queued.append(item)
        queued += [(record, 0) for record in self._late]
        in_hand = self._lines
        if (seal := self._seal("exit")) is not None:
            queued.append(seal)
        total = len(in_hand) + len(queued)
        try:
            if total:
                self._write_sync(in_hand, queued)
        except Exception as exc:
            self._carried = 0
            self.lost += total
            log.error(
                "audit: the process is ending and %d record(s) could not be written (%s); "
                "they are not in the trail",
                total,
                exc,
            )
        finally:
            self._closed = True
            close = getattr(self.sink, "close_sync", None)
            if close is not None:
                close()
        unreported = self._pending_loss + self._carried
        if unreported:
            log.error(
                "audit: %d record(s) lost after the last written record; the trail cannot "
                "show them",
                unreported,
            )

    def _write_sync(self, in_hand: list[str], queued: list[_Item]) -> None:
        sink = self.sink
        last_line = getattr(sink, "last_line_sync", None)
        append = getattr(sink, "append_sync", None)
        write = getattr(sink, "write_sync", None)
        if append is None and write is None:
            raise AuditError(f"a {type(sink).__name__} cannot be written without its event loop")
        last = last_line() if last_line is not None else None
        done = 0
        if append is None and last is not None:  # what the cancelled write got through
            done = next((i + 1 for i in range(len(in_hand) - 1, -1, -1) if in_hand[i] == last), 0)
        lines = list(in_hand[done:])
        prev = self._chain.link(in_hand[-1]) if in_hand else self._prev or self._after(last)
        seq = self._seq + len(in_hand)
        dropped = self._carried
        for record, loss in queued:
            dropped += loss
            try:
                line = self._encode(record, seq + 1, dropped, prev)
            except Exception as exc:
                log.error("audit: record %s cannot be serialised (%s)", _request_id(record), exc)
                self.lost += 1
                dropped += 1
                continue
            lines.append(line)
            prev = self._chain.link(line)
            seq += 1
            dropped = 0
        self._carried = dropped
        if append is not None and self.writer is not None:
            append(self.writer, self._seq + 1, lines)  # done is 0: it skips what landed
        elif write is not None:
            write(lines)
        self.written += len(lines)
        self._seq = seq
        self._prev = prev
        log.info("audit: wrote %d record(s) as the process ended", len(lines))

    def _drain_queue(self) -> int:
        """After the writer was stopped: counts what was in hand or still queued as lost."""
        count = self._in_hand
        self._carried += self._in_hand
        self._in_hand = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            self._queue.task_done()
            if item is not None:
                count += 1
                self._carried += 1 + item[1]
        if count:
            self._lose(count, "audit sink did not answer at shutdown; not in the trail")
        return count

    async def _run(self) -> None:
        try:
            await self._drain()
        except asyncio.CancelledError:
            # The loop is being torn down with records queued (asyncio.run ending after Ctrl-C,
            # no lifespan to close us): write them now, or count them.
            if not self._abandon:
                self.exit_sync()
            raise

    async def _drain(self) -> None:
        while True:
            item = await self._queue.get()
            stop = item is None
            batch: list[_Item] = [] if item is None else [item]
            while not stop and len(batch) < self._batch_size:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is None:
                    stop = True
                else:
                    batch.append(item)
            self._taken = batch
            try:
                if batch and self._gave_up:
                    self._carried += len(batch) + sum(loss for _, loss in batch)
                    self._lose(len(batch), "audit sink down at shutdown; not tried")
                elif batch:
                    await self._write_batch_counted(batch)
            finally:
                for _ in range(len(batch) + stop):
                    self._queue.task_done()
                self._settle(len(batch))
                if self.after_batch is not None:
                    self.after_batch(self)
            self._taken = []  # kept when cancelled: exit_sync writes it
            if stop:
                return

    async def _write_batch_counted(self, batch: list[_Item]) -> None:
        self._in_hand = len(batch)
        try:
            await self._write_batch(batch)
        except Exception:  # the writer task must outlive any single bad batch
            log.exception("audit: batch of %d record(s) lost", len(batch))
            self._carried += self._in_hand + sum(loss for _, loss in batch)
            self._lose(self._in_hand, f"writer error; {_REPORTED}")
            self._in_hand = 0
        # Cancelled (close() ran out of time): _in_hand stays for close() to count.

    async def _write_batch(self, batch: list[_Item]) -> None:
        if self.hash_chain and self._prev is None:
            await self._continue_chain_with_retries()
        prev = self._prev or self._after(None)
        lines: list[str] = []
        links: list[str] = []  # link(line) of each line: the prev of the one after it
        claims: list[int] = []  # the "dropped" each line carries, re-owed if it is not written
        dropped = self._carried
        for index, (record, loss) in enumerate(batch):
            if index and index % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # serialising is CPU work on the loop: let requests run
            dropped += loss
            try:  # everything that can fail on one record, so it never takes its batch down
                line = self._encode(record, self._seq + len(lines) + 1, dropped, prev)
                following = self._chain.link(line)  # hashes the UTF-8 bytes the sink will write
            except Exception as exc:
                log.error(
                    "audit: record %s cannot be serialised (%s); counted as dropped",
                    _request_id(record),
                    exc,
                )
                self.lost += 1
                self._in_hand -= 1
                dropped += 1
                continue
            lines.append(line)
            links.append(following)
            claims.append(dropped)
            prev = following
            dropped = 0
        self._carried = dropped
        self._in_hand = len(lines)
        self._lines = lines
        self._taken = []
        written = await self._write_with_retries(lines)
        self._in_hand = 0
        self._lines = []
        if written:
            self.written += written
            self._seq += written
            self._prev = links[written - 1]
        if written < len(lines):
            failed = len(lines) - written
            self._carried += failed + sum(claims[written:])
            self._lose(failed, f"audit sink failed; {_REPORTED}")

    def _encode(self, record: Mapping[str, Any], seq: int, dropped: int, prev: str) -> str:
        out = dict(record)
        for owned in ("writer", "seq", "dropped", "prev", "mac"):
            out.pop(owned, None)
        out["writer"] = self.writer
        out["seq"] = seq
        if dropped:
            out["dropped"] = dropped
        if self.hash_chain:
            out["prev"] = prev
        line = encode(out)
        return self._chain.seal(line) if isinstance(record, _Seal) else line

    def _seal(self, reason: str) -> _Item | None:
        """The record that ends this writer's keyed chain, carrying what was lost just before
        it (None: no keyed chain, or nothing written to end)."""
        if not (self._chain.keyed and self.hash_chain and (self._seq or self.emitted)):
            return None
        loss, self._pending_loss = self._pending_loss, 0
        return _Seal(ts=format_ts(time.time()), action=SEALED, reason=reason), loss

    async def _send(self, lines: list[str], done: int) -> None:
        append = getattr(self.sink, "append", None)
        if append is not None and self.writer is not None:
            # Idempotent: the sink skips what an earlier, timed-out attempt already appended.
            await append(self.writer, self._seq + done + 1, lines[done:])
        else:
            await self.sink.write(lines[done:])

    async def _write_with_retries(self, lines: list[str]) -> int:
        """Writes ``lines``; returns how many reached the sink. While serving, a failing sink
        is retried for as long as the queue has room; closing, or with the queue full, up to
        ``retries`` times."""
        done = 0
        attempt = 0
        idempotent = getattr(self.sink, "append", None) is not None
        while done < len(lines):
            try:
                await self._send(lines, done)
                return len(lines)
            except Exception as exc:
                if not idempotent:
                    done += await self._already_written(lines[done:])
                if done == len(lines):
                    return done
                attempt += 1
                patient = not self._closing and not self._queue.full()
                if attempt > self._retries and not patient:
                    # At shutdown a sink that failed every retry is down: what is still queued
                    # is counted as lost without trying, so that close() ends.
                    self._gave_up = self._closing
                    log.error(
                        "audit: sink failed %d times, giving up on %d record(s): %s",
                        attempt,
                        len(lines) - done,
                        exc,
                    )
                    return done
                delay = min(self._max_backoff, self._backoff * 2 ** (min(attempt, 32) - 1))
                now = self._monotonic()
                if attempt <= _LOUD_RETRIES or now - self._last_retry_warning >= self._warn_every:
                    self._last_retry_warning = now
                    log.warning(
                        "audit: sink write failed (%s); retry %d%s in %.2fs (%d record(s) "
                        "waiting, %d queued)",
                        exc,
                        attempt,
                        "" if patient else f"/{self._retries}",
                        delay,
                        len(lines) - done,
                        self._queue.qsize(),
                    )
                await self._sleep(delay)
        return done

    async def _already_written(self, lines: list[str]) -> int:
        """After a failed write: how many of ``lines`` the sink kept anyway (so a retry does not
        duplicate them and break the chain). Zero when the sink cannot tell."""
        try:
            async with asyncio.timeout(self._timeout):
                last = await self.sink.last_line()
        except Exception:
            return 0
        if last is None:
            return 0
        for index in range(len(lines) - 1, -1, -1):
            if lines[index] == last:
                return index + 1
        return 0

    async def _continue_chain(self) -> bool:
        """Reads the end of the trail, within ``timeout``. False (the chain stays unknown) when
        the sink fails or does not answer: the writer reads it again before the first batch."""
        try:
            async with asyncio.timeout(self._timeout):
                last = await self.sink.last_line()
        except Exception as exc:  # TimeoutError too: a sink that does not answer
            reason = str(exc) or f"no answer within {self._timeout:g}s"
            log.warning("audit: cannot read the end of the trail yet (%s)", reason)
            return False
        self._prev = self._after(last)
        return True

    async def _continue_chain_with_retries(self) -> None:
        for attempt in range(self._retries):
            if await self._continue_chain():
                return
            await self._sleep(min(self._max_backoff, self._backoff * 2**attempt))
        if not await self._continue_chain():
            log.error(
                "audit: the end of the trail stays unreadable; the chain restarts at "
                "genesis (verify will flag this point)"
            )
            self._prev = self._after(None)

    def _after(self, last: str | None) -> str:
        """The ``prev`` of this writer's first record, after ``last`` (None: a fresh trail)."""
        return self._chain.start(self.writer or "", last)

    def _lose(self, count: int, reason: str) -> None:
        self.lost += count
        self._unwarned += count
        self._reason = reason
        self._warn()

    def _warn(self, *, force: bool = False) -> None:
        # One warning per interval however hard the flood, with the count since the last one.
        if not self._unwarned:
            return
        now = self._monotonic()
        if force or now - self._last_warning >= self._warn_every:
            log.warning("audit: %d record(s) lost (%s)", self._unwarned, self._reason)
            self._unwarned = 0
            self._last_warning = now


class _Seal(dict[str, Any]):
    """A seal record: only the writer makes one (its line gets a MAC)."""


def _request_id(record: Mapping[str, Any]) -> object:
    try:
        return record.get("request_id", "?")
    except Exception:
        return "?"
