"""Where the CLI reads a trail from: files (each with its rotated PATH.N), globs of them, and
Redis streams (``redis://host:port/db?stream=NAME``, the sink's own URI).

A deployment has one file per worker process (``{pid}`` in the path) and per restart, or one
stream shared by every worker: ``guardrail audit`` takes any number of them.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from guardrail.audit.reader import Location, iter_lines, trail_files
from guardrail.backends.uri import mask_uri
from guardrail.errors import AuditError

DEFAULT_STREAM = "guardrail:audit"
_PAGE = 1000
_ROTATED = re.compile(r"^(?P<base>.+)\.(?P<index>\d+)$")
_GLOB = re.compile(r"[*?\[]")


class Source(Protocol):
    name: str

    def files(self) -> list[str]:
        """What the source reads, for the report: its files, or its stream."""

    def lines(self, after: str | None = None) -> Iterator[tuple[Location, bytes]]:
        """Raw lines (without the newline), oldest first."""


@dataclass(frozen=True, slots=True)
class FileTrail:
    """One file and its rotated PATH.N … PATH.1."""

    path: Path

    @property
    def name(self) -> str:
        return str(self.path)

    def files(self) -> list[str]:
        return [str(file) for file in trail_files(self.path)]

    def lines(self, after: str | None = None) -> Iterator[tuple[Location, bytes]]:
        return iter_lines(self.path)


class StreamTrail:
    """A Redis stream, read with XRANGE a page at a time."""

    def __init__(self, uri: str) -> None:
        import redis

        parts = urlsplit(uri)
        stream = DEFAULT_STREAM
        timeout = 5.0
        passthrough: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "stream":
                stream = value
            elif key == "timeout":
                try:
                    timeout = float(value)
                except ValueError:
                    raise AuditError(
                        f"{mask_uri(uri)}: timeout={value!r} is not a number"
                    ) from None
            elif key != "maxlen":  # the sink's own: nothing to do with reading
                passthrough.append((key, value))
        if not stream:
            raise AuditError(f"{mask_uri(uri)}: stream= is empty")
        self.stream = stream
        self.name = mask_uri(uri)
        client_uri = urlunsplit(parts._replace(query=urlencode(passthrough)))
        try:
            self._client: Any = redis.Redis.from_url(
                client_uri, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        except (ValueError, TypeError) as exc:
            raise AuditError(f"{self.name}: {exc}") from None

    def files(self) -> list[str]:
        return [self.name]

    def lines(self, after: str | None = None) -> Iterator[tuple[Location, bytes]]:
        """The stream's entries (after entry id ``after``, if given); each entry's ``record``."""
        from redis.exceptions import RedisError

        start = "-" if after is None else f"({after}"
        number = 0
        while True:
            try:
                entries = self._client.xrange(self.stream, min=start, count=_PAGE)
            except (RedisError, OSError) as exc:
                raise AuditError(f"{self.name}: {exc}") from exc
            for entry_id, fields in entries:
                number += 1
                ident = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                value = fields.get(b"record", b"")
                yield Location(self.name, number, ident), bytes(value)
            if len(entries) < _PAGE:
                return
            start = f"({ident}"

    def last_id(self) -> str | None:
        """The id of the stream's last entry (None when empty)."""
        from redis.exceptions import RedisError

        try:
            entries = self._client.xrevrange(self.stream, count=1)
        except (RedisError, OSError) as exc:
            raise AuditError(f"{self.name}: {exc}") from exc
        if not entries:
            return None
        entry_id = entries[0][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def exists(self) -> bool:
        from redis.exceptions import RedisError

        try:
            return bool(self._client.exists(self.stream))
        except (RedisError, OSError) as exc:
            raise AuditError(f"{self.name}: {exc}") from exc


def is_stream(spec: str) -> bool:
    return spec.split("://", 1)[0].lower() in ("redis", "rediss") and "://" in spec


def sources(specs: Sequence[str | os.PathLike[str]]) -> list[FileTrail | StreamTrail]:
    """The trails ``specs`` name: a file (its rotations included), a glob (a file it matches
    that is another match's rotation, ``PATH.3``, is read as part of PATH's trail), a Redis
    stream URI. ``AuditError`` for a spec that names nothing."""
    found: list[FileTrail | StreamTrail] = []
    seen: set[str] = set()
    for spec in specs:
        text = os.fspath(spec)
        if is_stream(text):
            stream = StreamTrail(text)
            if not stream.exists():
                raise AuditError(f"no audit stream {stream.stream!r} at {stream.name}")
            found.append(stream)
            continue
        if _GLOB.search(text) and not Path(text).exists():
            bases = trail_bases(sorted(glob.glob(text)))
            if not bases:
                raise AuditError(f"no audit trail matches {text}")
        else:
            trail_files(text)  # AuditError when there is nothing there
            bases = [Path(text)]
        for base in bases:
            key = os.path.realpath(base)
            if key not in seen:
                seen.add(key)
                found.append(FileTrail(base))
    return found


def trail_bases(matches: list[str]) -> list[Path]:
    """The trails among ``matches``: PATH.N stands for PATH (whether or not PATH exists)."""
    listed = set(matches)
    bases: dict[str, None] = {}
    for match in matches:
        rotated = _ROTATED.match(match)
        if rotated and (rotated.group("base") in listed or Path(rotated.group("base")).exists()):
            match = rotated.group("base")
        bases[match] = None
    return [Path(base) for base in bases]
