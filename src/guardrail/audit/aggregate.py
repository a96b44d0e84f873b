"""Repeated refusals of one subject become one record with a count, so a flood cannot flush the
trail.

A client can be refused as fast as it can send (429s, 403 blocks and challenges, failed
challenges, fail_closed 503s, 408s of bodies it never finishes); one record each would let it
rotate every earlier record out of the retention window. Refusals are keyed on what refused them
(route, action, status, and the refusing bucket's key, e.g. ``ip:203.0.113.7``, or else the
client's subnet: rotating API keys does not make a new key). The first refusal of a key is
recorded in full and opens an interval; the rest of the interval's refusals are only counted,
and when it closes one record stands for them: the last of them with ``"repeated": N`` and the
``first``/``last`` times of the N.
In mode observe the same decisions are counted: served, but still made in bulk.

Nothing is dropped: an interval that is due closes on the next refusal, on a timer, or at
shutdown (:meth:`Refusals.close`), and when ``max_keys`` intervals are open the oldest closes
early to make room. The injected clock decides what is due; the timer only wakes the check up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from guardrail.audit.record import MAX_SUBJECT, clip, format_ts
from guardrail.decision import BLOCK, CHALLENGE, LIMIT, THROTTLE, TIMEOUT, Decision
from guardrail.limits import tightest

Key = tuple[str, str, int, str, str]  # route, action, status, who refused, bucket name

MAX_KEYS = 4096
"""Intervals open at once: the aggregator's memory is this many held records at most."""

_REFUSED = frozenset((BLOCK, CHALLENGE, "challenge_failed", TIMEOUT))
# Answers that follow a charge of the request buckets: keyed on the bucket that refused, if any
_CHARGED = frozenset((LIMIT, TIMEOUT))
_UNREWRITABLE = (413, 415)  # a capping tier that cannot rewrite the body refuses it
_MIN_WAKE = 0.05


def refusal_key(decision: Decision, status: int) -> Key | None:
    """What a refusal is counted under, or None for a record that is always written whole (a
    request served, a challenge passed, a stream its budget cut)."""
    action = decision.action
    subject = decision.subject
    if action in _CHARGED:
        outcome = decision.outcome
        if outcome is not None and not outcome.allowed and outcome.states:
            # The bucket that said no: a per-ip limit keys on the ip whatever API key is sent.
            refusing = decision.limits[tightest(decision.limits, outcome)]
            who = clip(refusing.subject_key(subject), MAX_SUBJECT)
            return decision.route, action, status, who, refusing.name
        if not decision.storage_error and action == LIMIT:  # a stream its budget cut
            return None
    elif not (
        action in _REFUSED
        or decision.storage_error
        or (action == THROTTLE and status in _UNREWRITABLE)
    ):
        return None
    # Refused by the risk engine or a store that is down: no bucket to name, so the network it
    # came from (a client can mint principals, not networks).
    return decision.route, action, status, "subnet:" + clip(subject.subnet, MAX_SUBJECT), ""


@dataclass(slots=True)
class _Interval:
    due: float
    count: int = 0
    first: float = 0.0
    last: float = 0.0
    record: Mapping[str, Any] = field(default_factory=dict)  # the latest counted refusal


class Refusals:
    """Between the middleware and the audit log: ``emit(record, key, now)``."""

    def __init__(
        self,
        write: Callable[[Mapping[str, Any]], None],
        interval: float,
        clock: Callable[[], float],
        *,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self._write = write
        self.interval = interval
        self._clock = clock
        self._max_keys = max_keys
        self._open: dict[Key, _Interval] = {}  # insertion order is opening order: due order
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def emit(self, record: Mapping[str, Any], key: Key | None, now: float) -> None:
        """Writes ``record`` now, or counts it under ``key`` when an interval of that key is
        open. Closes the intervals that are due first."""
        opened = self._open
        if opened:
            self._close_due(now)
        if key is None or self.interval <= 0 or self._closed:
            self._write(record)
            return
        interval = opened.get(key)
        if interval is not None:
            if not interval.count:
                interval.first = now
            interval.count += 1
            interval.last = now
            interval.record = record
            return
        if len(opened) >= self._max_keys:
            # Full: the oldest interval closes early rather than anything going unrecorded.
            self._finish(opened.pop(next(iter(opened))))
        opened[key] = _Interval(now + self.interval)
        self._write(record)
        self._arm(now)

    def close(self) -> None:
        """Writes every open interval's count (at shutdown); later refusals are written whole."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        opened, self._open = self._open, {}
        for interval in opened.values():
            self._finish(interval)

    @property
    def pending(self) -> int:
        """Refusals counted but not yet written."""
        return sum(interval.count for interval in self._open.values())

    def _close_due(self, now: float) -> None:
        opened = self._open
        while opened:
            key = next(iter(opened))
            if opened[key].due > now:
                return
            self._finish(opened.pop(key))

    def _finish(self, interval: _Interval) -> None:
        if interval.count == 1:
            self._write(interval.record)  # one refusal: its own record, as it was
        elif interval.count:
            out = dict(interval.record)
            out["repeated"] = interval.count
            out["first"] = format_ts(interval.first)
            out["last"] = format_ts(interval.last)
            self._write(out)

    def _arm(self, now: float) -> None:
        # A wake-up for when traffic stops: the next refusal would close what is due anyway.
        if self._timer is not None or not self._open:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (called from sync code): the next refusal or close()
            return
        due = next(iter(self._open.values())).due
        self._timer = loop.call_later(max(_MIN_WAKE, due - now), self._wake)

    def _wake(self) -> None:
        self._timer = None
        now = self._clock()
        self._close_due(now)
        self._arm(now)
