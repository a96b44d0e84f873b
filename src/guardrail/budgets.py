"""Token budgets, in two phases: reserved at admission, settled from the response.

At admission a request reserves its prompt's estimate plus the output it may ask for
(``max_tokens`` times the choices, or the route's ``default_max_tokens``) against every
``cost: tokens`` bucket, in the same all-or-nothing storage call as its request limits: that
reservation is what keeps concurrent requests from spending one budget twice. After the
response, the reservation is settled to what was used: the ``usage`` the server reports, else
the prompt's estimate plus the output counted in the stream. What was not used is given back,
whether the response ended, the client left or the app failed. A stream that names no
max_tokens and outgrows its reservation reserves more as it goes (``extend``), and is ended
when the budget has no more. A settlement the storage fails (a timeout, a failover) is tried
again later (``Settlements.retry``), so that one blip does not keep whole reservations charged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple

from guardrail.backends.base import BucketCharge, Storage
from guardrail.backends.breaker import BreakerOpen
from guardrail.errors import StorageError
from guardrail.metering import Ask

logger = logging.getLogger("guardrail")

#: Tokens a stream reserves at a time once past its reservation: one storage call per this
#: many tokens, not one per event.
EXTEND_TOKENS = 256
#: A failed settlement is tried again this many times, RETRY_BACKOFF seconds after the
#: failure, then twice as long each time (0.5 + 1 + 2 + 4 + 8: a failover's worth).
RETRY_ATTEMPTS = 5
RETRY_BACKOFF = 0.5
#: Settlements waiting to be tried again at most; past it one is given up at once (its
#: reservation stays charged: the budget errs against the client, never for it).
RETRY_MAX = 10_000


class Reservation(NamedTuple):
    tokens: int  # reserved against every token bucket
    prompt: int  # of which the prompt's estimate
    open_ended: bool  # the request named no output cap: its stream is watched against the budget


def reservation(ask: Ask | None, default_max_tokens: int, size: int = 0) -> Reservation:
    """What a request reserves. A body guardrail could not read (``ask`` None) counts as a
    prompt of its ``size`` in bytes, four bytes a token, and the default output."""
    # At least one token: a request that asks for nothing is still metered, and settled.
    if ask is None:
        prompt = (size + 3) // 4
        return Reservation(max(1, prompt + default_max_tokens), prompt, True)
    if ask.output is None:
        return Reservation(ask.prompt + default_max_tokens * ask.choices, ask.prompt, True)
    return Reservation(max(1, ask.prompt + ask.output * ask.choices), ask.prompt, False)


@dataclass(slots=True)
class Budget:
    """One admitted request's hold on its token buckets."""

    storage: Storage  # the one that admitted it (the local fallback, when degraded)
    charges: list[BucketCharge]  # one per token bucket; ``cost`` is not read
    charged: int  # tokens held: the reservation, and what the stream has added since
    prompt: int  # the prompt's estimate, part of ``charged``
    # No output cap named: a stream past its reservation reserves more, or is ended. A request
    # that names max_tokens is trusted to stop near it (a server honours it): an estimate that
    # runs past its reservation is settled, and watched only past twice the reservation.
    open_ended: bool
    on_error: Callable[[StorageError], bool]  # warns; True: carry on (fail_open)
    retry: Callable[[Storage, list[BucketCharge]], None] | None = None  # a failed settlement
    settled: bool = False
    unmetered: bool = False  # the storage failed under fail_open: the stream goes on unwatched

    async def extend(self, need: int, now: float) -> bool:
        """Reserve at least ``need`` tokens more: ``EXTEND_TOKENS`` at a time while the budget
        has them, then whatever it has left; False when it has less than ``need``."""
        if self.unmetered:
            return True
        step = max(need, EXTEND_TOKENS)
        try:
            outcome = await self.storage.charge(self._moves(step), now)
            if not outcome.allowed:
                step = min(state.remaining for state in outcome.states)
                if step < need:
                    return False
                outcome = await self.storage.charge(self._moves(step), now)
        except StorageError as exc:
            # fail_open: no more calls to a failing storage for this stream
            self.unmetered = self.on_error(exc)
            return self.unmetered
        if outcome.allowed:
            self.charged += step
        return outcome.allowed

    async def settle(self, used: int, now: float) -> None:
        """Make the buckets hold ``used`` tokens for this request instead of ``charged``."""
        if self.settled:
            return
        self.settled = True
        if used != self.charged:
            moves = self._moves(used - self.charged)
            try:
                await self.storage.settle(moves, now)
            except StorageError as exc:
                self.on_error(exc)
                if self.retry is not None:  # tried again later; until then the charge stands
                    self.retry(self.storage, moves)
                return
            self.charged = used

    def _moves(self, tokens: int) -> list[BucketCharge]:
        return [c._replace(cost=tokens) for c in self.charges]


class Settlements:
    """Settlements that run to their end even when their request is cancelled (its client
    left): shielded, tracked, and waited for at shutdown. One the storage fails is tried
    again (``retry``): a bounded number of times, backing off, at most ``RETRY_MAX`` waiting
    at once; one given up is counted (``given_up``) and logged. While the storage's breaker
    is open, a settlement waits for it to close instead, spending no attempt."""

    def __init__(
        self,
        warn: Callable[[StorageError], None],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pending: set[asyncio.Future[None]] = set()
        self._retries: set[asyncio.Future[None]] = set()
        self._warn = warn
        self._sleep = sleep
        self._clock = clock
        self.given_up = 0  # settlements given up: their reservations stayed charged
        self._logged_at = float("-inf")

    def start(self, settlement: Awaitable[None]) -> asyncio.Future[None]:
        settling = asyncio.ensure_future(settlement)
        self._pending.add(settling)
        settling.add_done_callback(self._done)
        return settling

    def settle(self, storage: Storage, moves: list[BucketCharge], now: float) -> None:
        """Move the buckets by ``moves`` in the background, tried again if it fails."""
        self.start(self._first(storage, moves, now))

    def retry(self, storage: Storage, moves: list[BucketCharge]) -> None:
        """Try a failed settlement again, later."""
        if len(self._retries) >= RETRY_MAX:
            self._give_up(1, -moves[0].cost, "too many settlements wait for the storage")
            return
        retrying = asyncio.ensure_future(self._again(storage, moves))
        self._retries.add(retrying)
        retrying.add_done_callback(self._retries.discard)

    async def wait(self) -> None:
        """At shutdown: the settlements under way end; those waiting to be tried again are
        given up (their reservations stay charged), not waited for."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        waiting = list(self._retries)
        for retrying in waiting:
            retrying.cancel()
        if waiting:
            await asyncio.gather(*waiting, return_exceptions=True)
            self._give_up(len(waiting), 0, "guardrail shut down first")

    async def _first(self, storage: Storage, moves: list[BucketCharge], now: float) -> None:
        try:
            await storage.settle(moves, now)
        except StorageError as exc:
            self._warn(exc)
            self.retry(storage, moves)

    async def _again(self, storage: Storage, moves: list[BucketCharge]) -> None:
        delay = RETRY_BACKOFF
        error: StorageError | None = None
        attempts = 0
        while attempts < RETRY_ATTEMPTS:
            await self._sleep(delay)
            try:
                await storage.settle(moves, self._clock())
            except BreakerOpen as exc:
                # Redis is known to be down: wait until it is back rather than spend the
                # attempts (or call it), then go again after a random part of the delay, so
                # that the settlements that waited do not all arrive at once.
                await exc.breaker.wait_closed()
                delay = RETRY_BACKOFF * random.random()
            except StorageError as exc:
                error, delay, attempts = exc, delay * 2, attempts + 1
            else:
                return
        self._give_up(1, -moves[0].cost, f"{RETRY_ATTEMPTS} more attempts failed: {error}")

    def _give_up(self, count: int, tokens: int, why: str) -> None:
        self.given_up += count
        now = self._clock()
        if now - self._logged_at >= 10.0:  # a storage outage is said once in a while
            self._logged_at = now
            logger.warning(
                "guardrail: %d token settlement(s) given up (%s)%s; %d given up so far",
                count,
                why,
                f", {tokens} tokens stay charged" if tokens > 0 else "",
                self.given_up,
            )

    def _done(self, settling: asyncio.Future[None]) -> None:
        self._pending.discard(settling)
        if not settling.cancelled() and isinstance(exc := settling.exception(), StorageError):
            self._warn(exc)
