"""Where audit lines go: a rotating file, stdout, or a Redis stream. Built from a URI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import Sequence
from io import FileIO
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from guardrail.backends.uri import _number, mask_uri
from guardrail.errors import AuditError

if TYPE_CHECKING:
    from redis.asyncio import Redis

DEFAULT_STREAM = "guardrail:audit"
DEFAULT_TIMEOUT = 1.0
"""Seconds a Redis stream sink waits to connect, or for an answer, before the call fails."""
PID = "{pid}"
"""In a file sink's path, replaced by the writing process's id: one trail per worker."""


@runtime_checkable
class Sink(Protocol):
    async def write(self, lines: Sequence[str]) -> None:
        """Append ``lines`` (each without its newline) in order; raise if they were not written."""

    async def close(self) -> None: ...

    async def last_line(self) -> str | None:
        """The last line written by any earlier run, so a reopened trail continues its chain."""


class FileSink:
    """Appends to ``path``; past ``max_bytes`` rotates PATH -> PATH.1 -> ... -> PATH.keep.

    A line is never split across files: a batch that would overflow the current file rotates
    first. A single line longer than ``max_bytes`` gets a fresh file of its own.

    ``{pid}`` in ``path`` stands for the id of the process writing, read at each write: several
    worker processes (forked before or after the sink was built) each keep a trail of their own,
    whose hash chain verifies on its own. Without it they would interleave one file.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, max_bytes: int = 100_000_000, keep: int = 10
    ) -> None:
        if max_bytes <= 0:
            raise AuditError(f"audit rotate.max_bytes must be > 0, got {max_bytes}")
        if keep < 1:
            raise AuditError(f"audit rotate.keep must be >= 1, got {keep}")
        self._template = os.fspath(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self._file: FileIO | None = None
        self._size = 0
        # Writes run in worker threads; the lock keeps two overlapping batches from interleaving.
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """Where this process writes (``{pid}`` replaced by its process id)."""
        return Path(self._template.replace(PID, str(os.getpid())))

    async def write(self, lines: Sequence[str]) -> None:
        if lines:
            await asyncio.to_thread(self._write_sync, [f"{line}\n".encode() for line in lines])

    async def close(self) -> None:
        await asyncio.to_thread(self._close_sync)

    async def last_line(self) -> str | None:
        return await asyncio.to_thread(self._last_line_sync)

    def write_sync(self, lines: Sequence[str]) -> None:
        """:meth:`write` without the event loop (the process is ending)."""
        if lines:
            self._write_sync([f"{line}\n".encode() for line in lines])

    def last_line_sync(self) -> str | None:
        """:meth:`last_line` without the event loop, after any write in progress."""
        with self._lock:
            return self._last_line_sync()

    def close_sync(self) -> None:
        """:meth:`close` without the event loop."""
        self._close_sync()

    def _open(self) -> FileIO:
        if self._file is not None and self._moved_away(self._file):
            # Rotated or removed by someone else (logrotate), or this is a forked child whose
            # {pid} path differs: write to the file at our path.
            self._close_file()
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: each chunk is one write(2) we can undo, never half-flushed later.
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept across batches
            self._size = os.fstat(self._file.fileno()).st_size
            if self._size and not _ends_with_newline(self.path):
                # A crash left half a line: end it so our first line does not glue onto it.
                self._file.write(b"\n")
                self._size += 1
        return self._file

    def _write_sync(self, encoded: list[bytes]) -> None:
        with self._lock:
            self._open()
            chunk: list[bytes] = []
            chunk_size = 0
            for data in encoded:
                used = self._size + chunk_size
                if used and used + len(data) > self.max_bytes:
                    if chunk:
                        self._append(b"".join(chunk))
                        chunk.clear()
                        chunk_size = 0
                    self._rotate()
                chunk.append(data)
                chunk_size += len(data)
            if chunk:
                self._append(b"".join(chunk))

    def _append(self, data: bytes) -> None:
        file = self._open()
        start = self._size
        try:
            view = memoryview(data)
            while view:
                view = view[file.write(view) or 0 :]
        except BaseException:
            # Leave no half line behind: the writer then retries from the last whole line.
            with contextlib.suppress(OSError):
                file.truncate(start)
            self._close_file()
            raise
        self._size += len(data)

    def _moved_away(self, file: FileIO) -> bool:
        try:
            return os.stat(self.path).st_ino != os.fstat(file.fileno()).st_ino
        except FileNotFoundError:
            return True

    def _rotate(self) -> None:
        self._close_file()
        oldest = self._rotated(self.keep)
        if oldest.exists():
            oldest.unlink()
        for index in range(self.keep - 1, 0, -1):
            source = self._rotated(index)
            if source.exists():
                source.rename(self._rotated(index + 1))
        if self.path.exists():
            self.path.rename(self._rotated(1))
        self._size = 0

    def _close_file(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()

    def _rotated(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def _close_sync(self) -> None:
        with self._lock:
            self._close_file()

    def _last_line_sync(self) -> str | None:
        for candidate in (self.path, *(self._rotated(i) for i in range(1, self.keep + 1))):
            line = _read_last_line(candidate)
            if line is not None:
                return line
        return None


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"


def _read_last_line(path: Path, block: int = 8192) -> str | None:
    """The last non-empty line of ``path``, read backwards from the end; None if there is none."""
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed below; reading backwards needs the handle
    except FileNotFoundError:
        return None
    with file:
        end = file.seek(0, os.SEEK_END)
        tail = b""
        position = end
        while position > 0:
            step = min(block, position)
            position -= step
            file.seek(position)
            tail = file.read(step) + tail
            stripped = tail.rstrip(b"\n")
            if b"\n" in stripped or (position == 0 and stripped):
                return stripped.rsplit(b"\n", 1)[-1].decode("utf-8", errors="replace")
        return None


class StdoutSink:
    """Writes lines to ``sys.stdout`` (looked up per batch, so redirection is honoured)."""

    async def write(self, lines: Sequence[str]) -> None:
        if lines:
            text = "".join(f"{line}\n" for line in lines)
            await asyncio.to_thread(_write_stdout, text)

    async def close(self) -> None:
        await asyncio.to_thread(sys.stdout.flush)

    async def last_line(self) -> str | None:
        return None

    def write_sync(self, lines: Sequence[str]) -> None:
        if lines:
            _write_stdout("".join(f"{line}\n" for line in lines))


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# Appends one writer's lines to the stream, skipping those whose sequence number the writer's
# key says are already there: atomic (a script runs whole or not at all), so a batch re-sent
# after a timeout, whose first attempt did land, adds nothing. Redis 7.0 has no XADD option for
# this (IDMP comes in 8.x), and explicit entry ids would refuse a second writer's interleaved ids.
_APPEND = """
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local first = tonumber(ARGV[3])
local added = 0
for i = 4, #ARGV do
  local seq = first + i - 4
  if seq > last then
    if ARGV[2] == '' then
      redis.call('XADD', KEYS[1], '*', 'record', ARGV[i])
    else
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'record', ARGV[i])
    end
    last = seq
    added = added + 1
  end
end
redis.call('SET', KEYS[2], last, 'EX', ARGV[1])
return added
"""
SEQ_TTL = 7 * 86400
"""Seconds a writer's last sequence number is kept after its last append (``STREAM:seq:WRITER``):
long enough for any retry, short enough that restarted writers leave nothing behind."""


class RedisStreamSink:
    """``XADD <stream> * record <line>`` per line, one round trip per batch.

    :meth:`append` (what the audit writer uses) is idempotent per writer: each line's sequence
    number is checked against the writer's last one in ``<stream>:seq:<writer>`` by a script.
    Every call gives up after ``timeout`` seconds (``?timeout=``, default 1) with AuditError.
    """

    def __init__(self, uri: str) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        parts = urlsplit(uri)
        query = parse_qsl(parts.query, keep_blank_values=True)
        self.stream = DEFAULT_STREAM
        self.maxlen: int | None = None
        self.timeout = DEFAULT_TIMEOUT
        passthrough: list[tuple[str, str]] = []
        for key, value in query:
            if key == "stream":
                if not value:
                    raise AuditError(f"audit sink {mask_uri(uri)}: stream= is empty")
                self.stream = value
            elif key == "maxlen":
                try:
                    self.maxlen = int(value)
                except ValueError:
                    raise AuditError(
                        f"audit sink {mask_uri(uri)}: maxlen={value!r} is not an integer"
                    ) from None
                if self.maxlen <= 0:
                    raise AuditError(f"audit sink {mask_uri(uri)}: maxlen must be > 0")
            elif key == "timeout":
                self.timeout = _number(float, value)
                if not 0 < self.timeout < float("inf"):
                    raise AuditError(
                        f"audit sink {mask_uri(uri)}: timeout must be a positive number of "
                        f"seconds, got {value!r}"
                    )
            else:
                passthrough.append((key, value))
        self._uri = mask_uri(uri)
        client_uri = self._client_uri = urlunsplit(parts._replace(query=urlencode(passthrough)))
        try:
            # Bounded calls and no retries of the client's own: a server that stops answering
            # fails the call within ``timeout``, and the audit writer's retries take over.
            self._client: Redis = aioredis.from_url(
                client_uri,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
            )
        except (ValueError, TypeError) as exc:
            raise AuditError(f"audit sink {self._uri}: {exc}") from None
        self._script = self._client.register_script(_APPEND)

    def _append_call(
        self, writer: str, first: int, lines: Sequence[str]
    ) -> tuple[list[str], list[str | int]]:
        keys = [self.stream, f"{self.stream}:seq:{writer}"]
        return keys, [SEQ_TTL, "" if self.maxlen is None else self.maxlen, first, *lines]

    async def append(self, writer: str, first: int, lines: Sequence[str]) -> None:
        """Appends ``lines``, numbered ``first``, ``first + 1``, ... by ``writer``, skipping the
        numbers already appended: a retry never duplicates a line."""
        from redis.exceptions import RedisError

        if not lines:
            return
        keys, args = self._append_call(writer, first, lines)
        try:
            await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise AuditError(f"audit sink {self._uri}: {exc}") from exc

    def append_sync(self, writer: str, first: int, lines: Sequence[str]) -> None:
        """:meth:`append` without the event loop (the process is ending)."""
        import redis
        from redis.exceptions import RedisError

        if not lines:
            return
        keys, args = self._append_call(writer, first, lines)
        try:
            with redis.Redis.from_url(
                self._client_uri,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
            ) as client:
                client.register_script(_APPEND)(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise AuditError(f"audit sink {self._uri}: {exc}") from exc

    async def write(self, lines: Sequence[str]) -> None:
        from redis.exceptions import RedisError

        if not lines:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for line in lines:
                    pipe.xadd(self.stream, {"record": line}, maxlen=self.maxlen, approximate=True)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise AuditError(f"audit sink {self._uri}: {exc}") from exc

    async def close(self) -> None:
        await self._client.aclose()

    async def last_line(self) -> str | None:
        from redis.exceptions import RedisError

        try:
            entries = await self._client.xrevrange(self.stream, count=1)
        except (RedisError, OSError) as exc:
            raise AuditError(f"audit sink {self._uri}: {exc}") from exc
        if not entries:
            return None
        fields = entries[0][1] or {}
        value = fields.get(b"record", fields.get("record"))
        if value is None:
            return None
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def sink_from_uri(uri: str, *, max_bytes: int = 100_000_000, keep: int = 10) -> Sink:
    """``file://PATH`` (``file://audit.jsonl`` is relative, ``file:///var/log/a.jsonl`` absolute;
    ``{pid}`` in PATH gives each worker process a trail of its own), ``stdout://``,
    ``redis://host:port/db?stream=NAME&maxlen=N&timeout=SECONDS`` or ``rediss://``."""
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower()
    if sep and scheme == "file":
        if not rest:
            raise AuditError(f"audit sink {mask_uri(uri)}: no path after file://")
        return FileSink(rest, max_bytes=max_bytes, keep=keep)
    if sep and scheme == "stdout":
        if rest not in ("", "/"):
            raise AuditError(f"audit sink {mask_uri(uri)}: stdout:// takes nothing after it")
        return StdoutSink()
    if sep and scheme in ("redis", "rediss"):
        return RedisStreamSink(uri)
    raise AuditError(
        f"audit sink {mask_uri(uri)!r} not understood: expected file://PATH, stdout:// or "
        "redis://host:port/db?stream=NAME"
    )
