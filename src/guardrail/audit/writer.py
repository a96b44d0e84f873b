"""AuditLog: the request path hands records over without waiting; one task writes them in batches.

Nothing is lost silently. A record that cannot be queued (queue full, log closed) or written
(sink still failing after the retries) is counted, logged, and reported as ``"dropped": N`` in
the next record that does get written. The hash chain is assigned at write time, so it always
links the lines that actually reached the sink.

A sink that stops answering holds up neither startup nor shutdown: reading the end of the trail
gives up after ``timeout`` (the chain stays unknown and is read again before the first write),
and :meth:`AuditLog.close` gives up after ``close_timeout``, counting what it could not write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from guardrail.audit.record import GENESIS, encode, link
from guardrail.audit.sinks import Sink

log = logging.getLogger("guardrail.audit")

_YIELD_EVERY = 64
_REPORTED = 'reported as "dropped" in the next record written'
_Item = tuple[Mapping[str, Any], int]  # (record, records lost just before it was queued)


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
    ) -> None:
        self.sink = sink
        self.hash_chain = hash_chain
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
        self._unwarned = 0
        self._reason = ""
        self._pending_loss = 0  # lost since the last record that made it into the queue
        self._carried = 0  # lost while writing, owed to the next record written
        self._prev: str | None = None  # None: not yet read from the sink
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False

    async def start(self) -> None:
        """Reads where the trail ends (to continue its chain) and starts the writer task."""
        if self._closed:
            return
        if self._task is None or self._task.done():
            if self.hash_chain and self._prev is None:
                await self._continue_chain()
            self._task = asyncio.create_task(self._run(), name="guardrail-audit-writer")

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has drained the queue and closed the sink."""
        return self._closed

    def emit(self, record: Mapping[str, Any]) -> None:
        """Queues ``record`` (which the log now owns: do not mutate it). Never blocks or raises."""
        if self._closing:
            self._lose(1, "emitted after the audit log was closed; not in the trail")
            return
        try:
            self._queue.put_nowait((record, self._pending_loss))
        except asyncio.QueueFull:
            self._pending_loss += 1
            self._lose(1, f"audit queue full; {_REPORTED}")
            return
        self._pending_loss = 0

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
                await self._queue.put(None)  # waits for room: the writer task keeps draining
                await asyncio.shield(self._task)
        except TimeoutError:
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
            try:
                if batch and self._gave_up:
                    self._carried += len(batch) + sum(loss for _, loss in batch)
                    self._lose(len(batch), "audit sink down at shutdown; not tried")
                elif batch:
                    await self._write_batch_counted(batch)
            finally:
                for _ in range(len(batch) + stop):
                    self._queue.task_done()
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
        prev = self._prev or GENESIS
        lines: list[str] = []
        links: list[str] = []  # link(line) of each line: the prev of the one after it
        claims: list[int] = []  # the "dropped" each line carries, re-owed if it is not written
        dropped = self._carried
        for index, (record, loss) in enumerate(batch):
            if index and index % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # serialising is CPU work on the loop: let requests run
            dropped += loss
            try:  # everything that can fail on one record, so it never takes its batch down
                out = dict(record)
                out.pop("dropped", None)
                out.pop("prev", None)
                if dropped:
                    out["dropped"] = dropped
                if self.hash_chain:
                    out["prev"] = prev
                line = encode(out)
                following = link(line)  # hashes the UTF-8 bytes the sink will write
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
        written = await self._write_with_retries(lines)
        self._in_hand = 0
        if written:
            self.written += written
            self._prev = links[written - 1]
        if written < len(lines):
            failed = len(lines) - written
            self._carried += failed + sum(claims[written:])
            self._lose(failed, f"audit sink failed; {_REPORTED}")

    async def _write_with_retries(self, lines: list[str]) -> int:
        """Writes ``lines``; returns how many reached the sink (all unless it kept failing)."""
        done = 0
        attempt = 0
        while done < len(lines):
            try:
                await self.sink.write(lines[done:])
                return len(lines)
            except Exception as exc:
                done += await self._already_written(lines[done:])
                if done == len(lines):
                    return done
                attempt += 1
                if attempt > self._retries:
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
                delay = min(self._max_backoff, self._backoff * 2 ** (attempt - 1))
                log.warning(
                    "audit: sink write failed (%s); retry %d/%d in %.2fs",
                    exc,
                    attempt,
                    self._retries,
                    delay,
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
        self._prev = GENESIS if last is None else link(last)
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
            self._prev = GENESIS

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


def _request_id(record: Mapping[str, Any]) -> object:
    try:
        return record.get("request_id", "?")
    except Exception:
        return "?"
