"""AuditLog: the request path hands records over without waiting; one task writes them in batches.

Nothing is lost silently. A record that cannot be queued (queue full, log closed) or written
(sink still failing after the retries) is counted, logged, and reported as ``"dropped": N`` in
the next record that does get written. The hash chain is assigned at write time, so it always
links the lines that actually reached the sink.
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
        """Writes everything queued so far, then closes the sink."""
        if self._closed:
            return
        self._closing = True
        await self.start()
        await self._queue.put(None)  # waits for room: the writer task keeps draining
        assert self._task is not None
        await self._task
        unreported = self._pending_loss + self._carried
        if unreported:
            log.error(
                "audit: %d record(s) lost after the last written record; the trail "
                "cannot show them",
                unreported,
            )
        self._warn(force=True)
        self._closed = True
        await self.sink.close()

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
            if batch:
                try:
                    await self._write_batch(batch)
                except Exception:  # the writer task must outlive any single bad batch
                    log.exception("audit: batch of %d record(s) lost", len(batch))
                    self._carried += len(batch) + sum(loss for _, loss in batch)
                    self._lose(len(batch), f"writer error; {_REPORTED}")
            for _ in range(len(batch) + stop):
                self._queue.task_done()
            if stop:
                return

    async def _write_batch(self, batch: list[_Item]) -> None:
        if self.hash_chain and self._prev is None:
            await self._continue_chain_with_retries()
        prev = self._prev or GENESIS
        lines: list[str] = []
        claims: list[int] = []  # the "dropped" each line carries, re-owed if it is not written
        dropped = self._carried
        for index, (record, loss) in enumerate(batch):
            if index and index % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # serialising is CPU work on the loop: let requests run
            dropped += loss
            out = dict(record)
            out.pop("dropped", None)
            out.pop("prev", None)
            if dropped:
                out["dropped"] = dropped
            if self.hash_chain:
                out["prev"] = prev
            try:
                line = encode(out)
            except (TypeError, ValueError) as exc:
                log.error(
                    "audit: record %s cannot be serialised (%s); counted as dropped",
                    record.get("request_id", "?"),
                    exc,
                )
                self.lost += 1
                dropped += 1
                continue
            lines.append(line)
            claims.append(dropped)
            prev = link(line)
            dropped = 0
        self._carried = dropped
        written = await self._write_with_retries(lines)
        if written:
            self.written += written
            self._prev = link(lines[written - 1])
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
        try:
            last = await self.sink.last_line()
        except Exception as exc:
            log.warning("audit: cannot read the end of the trail yet (%s)", exc)
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
