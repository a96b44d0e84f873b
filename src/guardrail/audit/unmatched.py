"""Requests no route of the policy matched, counted per method and path and written to the trail
as one record an interval, so that traffic to paths the policy does not name is never invisible.

A policy that names ``/v1/chat/completions`` leaves ``/chat/completions`` (the same endpoint in
LiteLLM and others) unlimited; nothing of such a request reaches the trail as a decision. Each
one is counted here instead (whatever ``unmatched:`` did with it: passed, refused, or decided
under the default route), and every ``interval`` one record says how many went where::

    {"ts": …, "policy": …, "mode": …, "route": null, "action": "unmatched", "unmatched": "pass",
     "repeated": 6, "first": …, "last": …, "paths": {"POST /chat/completions": 4, …}}

``repeated`` is the number of requests, so ``guardrail audit summary`` counts them with the
rest. Paths are the ones the routes are matched on (``root_path`` removed). A client can send
any path: at most ``max_paths`` are named per record, the rest counted under ``OTHER``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from guardrail.audit.record import MAX_METHOD, clip, format_ts

MAX_PATHS = 64
"""Paths named in one record; requests to any other path that interval are counted together."""
MAX_KEY_PATH = 200
"""Characters of a path kept in its key (cut like any client string, so two stay apart)."""
OTHER = "(other paths)"
_MIN_WAKE = 0.05


class Unmatched:
    """Between the middleware and the audit log: ``count(method, path, now)``."""

    def __init__(
        self,
        write: Callable[[Mapping[str, Any]], None],
        head: Mapping[str, Any],
        handling: str,
        interval: float,
        clock: Callable[[], float],
        *,
        max_paths: int = MAX_PATHS,
    ) -> None:
        self._write = write
        self._head = dict(head)  # policy, mode: the same in every record
        self._handling = handling  # the policy's unmatched: pass, refuse or a route's name
        self.interval = interval
        self._clock = clock
        self._max_paths = max_paths
        self._paths: dict[str, int] = {}
        self._count = 0
        self._first = self._last = self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def count(self, method: str, path: str, now: float) -> None:
        if self._count and now >= self._due:
            self._flush()
        if not self._count:
            self._first, self._due = now, now + self.interval
            self._arm(now)
        self._count += 1
        self._last = now
        paths = self._paths
        key = f"{clip(method, MAX_METHOD)} {clip(path, MAX_KEY_PATH)}"
        if key in paths:
            paths[key] += 1
        elif len(paths) < self._max_paths:
            paths[key] = 1
        else:
            paths[OTHER] = paths.get(OTHER, 0) + 1

    @property
    def pending(self) -> int:
        """Requests counted but not yet written."""
        return self._count

    def rehead(self, head: Mapping[str, Any], handling: str) -> None:
        """A policy reloaded: what was counted under the old one is written under its name."""
        self._flush()
        self._head, self._handling = dict(head), handling

    def close(self) -> None:
        """Writes what is counted (at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush()

    def _flush(self) -> None:
        if not self._count:
            return
        record: dict[str, Any] = {"ts": format_ts(self._last), **self._head}
        record["route"] = None
        record["action"] = "unmatched"
        record["unmatched"] = self._handling
        record["repeated"] = self._count
        record["first"] = format_ts(self._first)
        record["last"] = format_ts(self._last)
        record["paths"] = dict(sorted(self._paths.items(), key=lambda kv: -kv[1]))
        self._paths, self._count = {}, 0
        self._write(record)

    def _arm(self, now: float) -> None:
        # A wake-up for when traffic stops: the next unmatched request would flush anyway.
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (called from sync code): the next request or close()
            return
        self._timer = loop.call_later(max(_MIN_WAKE, self._due - now), self._wake)

    def _wake(self) -> None:
        self._timer = None
        now = self._clock()
        if self._count and now >= self._due:
            self._flush()
        elif self._count:
            self._arm(now)
