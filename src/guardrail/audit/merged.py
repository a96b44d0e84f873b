"""``guardrail audit tail`` over several trails (one per worker, globs, Redis streams): their
records merged by time, and with ``--follow`` the new records of every trail as they come,
a trail that appears later (a worker started since, matching a glob) included."""

from __future__ import annotations

import heapq
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

from guardrail.audit.reader import _Follower, format_raw
from guardrail.audit.sources import FileTrail, StreamTrail, sources

_Line = tuple[float, int, str]  # (time, source, text): merged on time, ties in source order


def tail_many(
    specs: Sequence[str],
    follow: bool = False,
    out: TextIO | None = None,
    *,
    sleep: Callable[[float], object] = time.sleep,
    interval: float = 1.0,
    stop: Callable[[], bool] | None = None,
    lines: int | None = None,
) -> int:
    """Prints the records of every trail ``specs`` name, merged by time (or the last ``lines``
    of them); with ``follow`` keeps printing new ones until ``stop()`` or Ctrl-C."""
    stream = out if out is not None else sys.stdout
    trails = sources(specs)
    malformed = [0]
    merged = heapq.merge(*(_timed(trail, index, malformed) for index, trail in enumerate(trails)))
    shown: Iterator[_Line] | deque[_Line] = merged if lines is None else deque(merged, lines)
    for _, _, text in shown:
        print(text, file=stream)
    stream.flush()
    if follow:
        watch = _Watch(specs, trails, stream)
        try:
            while not (stop is not None and stop()):
                sleep(interval)
                watch.poll()
        except KeyboardInterrupt:
            pass
        finally:
            watch.close()
        malformed[0] += watch.malformed()
    if malformed[0]:
        print(f"-- {malformed[0]} line(s) were not audit records", file=stream)
    return 0


def _timed(trail: FileTrail | StreamTrail, index: int, malformed: list[int]) -> Iterator[_Line]:
    # A line without a time sorts with the line before it in its own trail.
    when = float("-inf")
    for location, raw in trail.lines():
        text, ok, stamp = format_raw(location, raw)
        malformed[0] += not ok
        when = stamp if stamp is not None else when
        yield when, index, text


class _Watch:
    """The followers of every trail, polled in turn; what a poll finds is printed by time."""

    def __init__(
        self, specs: Sequence[str], trails: list[FileTrail | StreamTrail], out: TextIO
    ) -> None:
        self.specs = specs
        self.out = out
        self.files: dict[Path, _Follower] = {}
        self.streams: dict[str, tuple[StreamTrail, str | None]] = {}
        for trail in trails:
            if isinstance(trail, FileTrail):
                follower = self._follower(trail.path)
                follower.start_at_end()
            else:
                self.streams[trail.name] = (trail, _last_id(trail))

    def _follower(self, path: Path) -> _Follower:
        follower = self.files[path] = _Follower(path, self.out, None)
        follower.collected = []
        return follower

    def poll(self) -> None:
        found: list[tuple[float, int, str]] = []
        self._discover()
        for index, follower in enumerate(self.files.values()):
            follower.poll()
            found += _drain(follower, index)
        for index, (name, (trail, after)) in enumerate(self.streams.items(), len(self.files)):
            for location, raw in trail.lines(after):
                text, _, stamp = format_raw(location, raw)
                found.append((stamp if stamp is not None else float("-inf"), index, text))
                after = location.entry
            self.streams[name] = (trail, after)
        for _, _, text in sorted(found, key=lambda line: (line[0], line[1])):
            print(text, file=self.out)
        self.out.flush()

    def _discover(self) -> None:
        # A worker started since: its trail is printed from its beginning.
        try:
            current = sources([spec for spec in self.specs if not _is_stream(spec)])
        except Exception:  # a glob matching nothing yet: nothing new
            return
        for trail in current:
            if isinstance(trail, FileTrail) and trail.path not in self.files:
                self._follower(trail.path).start()

    def malformed(self) -> int:
        return sum(follower.malformed for follower in self.files.values())

    def close(self) -> None:
        for follower in self.files.values():
            follower.close()
        self.poll_collected()

    def poll_collected(self) -> None:
        found: list[tuple[float, int, str]] = []
        for index, follower in enumerate(self.files.values()):
            found += _drain(follower, index)
        for _, _, text in sorted(found, key=lambda line: (line[0], line[1])):
            print(text, file=self.out)
        self.out.flush()


def _drain(follower: _Follower, index: int) -> list[tuple[float, int, str]]:
    collected = follower.collected or []
    follower.collected = []
    when = float("-inf")
    found = []
    for stamp, text in collected:
        when = stamp if stamp is not None else when
        found.append((when, index, text))
    return found


def _is_stream(spec: str) -> bool:
    return spec.split("://", 1)[0].lower() in ("redis", "rediss") and "://" in spec


def _last_id(trail: StreamTrail) -> str | None:
    return trail.last_id()
