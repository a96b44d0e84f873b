"""Deadlines for reading request bodies: a client that stalls mid-body must not hold a
connection (and what it sent so far) for as long as it likes.

One timer per worker, not one per read: ``asyncio.timeout`` schedules and cancels a timer
handle on every request (several µs in pure-Python asyncio, on the hot path), while a read
that finishes in time (nearly all) costs here two dict operations. The timer runs only while
reads are in flight, every ``tick`` seconds, and cancels the task of each read past its
deadline; a deadline is thus met up to one tick late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from time import monotonic
from typing import Any

_current_task = asyncio.current_task


class Deadlines:
    """Reads in flight and their deadlines (``monotonic`` seconds), for one event loop."""

    __slots__ = ("_due", "_expired", "_loop", "_timer", "tick")

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self._due: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, timeout: float) -> asyncio.Task[object]:
        """Watch the current task for ``timeout`` seconds; ``stop`` it when the read ends."""
        task = _current_task()
        assert task is not None  # an ASGI request always runs in a task
        self._due[task] = monotonic() + timeout
        if self._timer is None or self._loop is not task.get_loop():
            self._arm(task.get_loop())  # the first read, or a new event loop
        return task

    def stop(self, task: asyncio.Task[object]) -> None:
        self._due.pop(task, None)  # gone already if the deadline passed
        if self._expired and task in self._expired:
            # Cancelled as the read ended, and the server's receive swallowed it: nothing
            # is left pending, only the count to put back.
            self._expired.discard(task)
            task.uncancel()

    def expired(self, task: asyncio.Task[object]) -> bool:
        """Was the CancelledError that ``task`` caught this deadline's, and only its? Call it
        before ``stop``."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        # Another cancellation on top of ours (the server shutting down): that one wins.
        return task.uncancel() == 0

    def sweep(self, now: float) -> None:
        """Cancel every read past its deadline at ``now``."""
        late = [task for task, due in self._due.items() if due <= now]
        for task in late:
            del self._due[task]
            self._expired.add(task)
            # A task already done cannot be cancelled; its read then ended on its own.
            if not task.cancel("guardrail: body deadline"):
                self._expired.discard(task)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._loop = loop
        self._timer = loop.call_later(self.tick, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.sweep(monotonic())
        if self._due and self._loop is not None and not self._loop.is_closed():
            self._arm(self._loop)


class Resumed:
    """The rest of a coroutine that suspended on its first step: awaiting this drives it to
    its end (``yield from``, PEP 380, written out for a coroutine already started).

    Why: a server hands over a body it already holds without suspending (uvicorn does for
    any body that came with the headers), and watching every read costs ~2 µs a request, most
    of it ``asyncio.current_task``. So ``read_body`` takes the first step of ``receive()``
    itself and starts the deadline only for a read that has to wait."""

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro, self._yielded = coro, yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self._coro, self._yielded
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as thrown:  # a cancellation (ours or the server's): passed in
                try:
                    yielded = coro.throw(thrown)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as done:
                    return done.value
