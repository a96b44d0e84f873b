"""Reading a trail back for the CLI: ``tail`` and ``summary`` over rotated files (``verify`` has
a module of its own)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO

from guardrail.audit.chain import SEALED
from guardrail.audit.record import format_ts, parse_ts
from guardrail.errors import AuditError


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int
    entry: str | None = None
    """A stream entry's id (the ``file`` is then the stream's URI)."""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.entry is None else f"{self.file} #{self.entry}"


# --- files and records -------------------------------------------------------------------------


def rotated_files(path: str | os.PathLike[str]) -> list[Path]:
    """PATH.N … PATH.1 (oldest first) that exist; PATH itself is not included."""
    base = Path(path)
    prefix = base.name + "."
    try:
        names = os.listdir(base.parent)
    except FileNotFoundError:
        return []
    indexed = [
        (int(name[len(prefix) :]), base.with_name(name))
        for name in names
        if name.startswith(prefix) and name[len(prefix) :].isdigit()
    ]
    return [file for _, file in sorted(indexed, reverse=True)]


def trail_files(path: str | os.PathLike[str]) -> list[Path]:
    """Every file of the trail, oldest first. ``AuditError`` when there is none."""
    files = rotated_files(path)
    if Path(path).exists():
        files.append(Path(path))
    if not files:
        raise AuditError(f"no audit trail at {os.fspath(path)} (nor rotated {os.fspath(path)}.N)")
    return files


def iter_lines(path: str | os.PathLike[str]) -> Iterator[tuple[Location, bytes]]:
    """Raw lines (without the newline) of the whole trail, oldest first."""
    for file in trail_files(path):
        with open(file, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                yield Location(str(file), number), raw.rstrip(b"\n")


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """The record on ``raw``, or None when the line is not a JSON object."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
        return None
    return value if isinstance(value, dict) else None


def iter_records(
    path: str | os.PathLike[str], malformed: list[Location] | None = None
) -> Iterator[tuple[Location, dict[str, Any]]]:
    """Records of the whole trail, oldest first. Lines that are not records are skipped and, when
    ``malformed`` is given, their locations appended to it."""
    for location, raw in iter_lines(path):
        record = parse_line(raw)
        if record is None:
            if malformed is not None:
                malformed.append(location)
            continue
        yield location, record


# --- tail --------------------------------------------------------------------------------------

_ACTION_WIDTH = len("challenge_failed")
_ROUTE_WIDTH = 12
_REQUEST_WIDTH = 34


def format_record(record: dict[str, Any]) -> str:
    """One fixed-column line for a human: when, what, to whom, why. Every character that could
    drive a terminal (controls, bidi overrides, line separators) is shown escaped."""
    ts = str(record.get("ts", "?")).ljust(24)
    if record.get("action") == SEALED:
        return printable(
            f"{ts}  {SEALED:<{_ACTION_WIDTH}}   -  writer {record.get('writer', '?')} ended its "
            f"chain here ({record.get('reason', '?')})"
        )
    if str(record.get("action")).startswith("policy_reload"):
        return printable(f"{ts}  {_reload_text(record)}")
    action = str(record.get("action", "?")).ljust(_ACTION_WIDTH)
    status = record.get("status")
    status_text = str(status) if status is not None else "-"
    route = str(record.get("route") or "-").ljust(_ROUTE_WIDTH)
    request = f"{record.get('method', '?')} {record.get('path', '?')}".ljust(_REQUEST_WIDTH)
    score = record.get("score")
    score_text = f"{score:.1f}" if isinstance(score, int | float) else "-"
    parts = [
        f"{ts}  {action} {status_text:>3}  score={score_text:<5}  {route} {request}",
        _subject_text(record),
    ]
    repeated = repeats(record)
    if repeated > 1:
        # after the fixed columns, which stay aligned with the records around it
        parts.insert(1, f"x{repeated} from {record.get('first', '?')} to {record.get('last', '?')}")
    if record.get("tier"):
        parts.append(f"tier={record['tier']}")
    limit = record.get("limit")
    if isinstance(limit, dict):
        retry = limit.get("retry_after", "?")
        parts.append(
            f"limit={limit.get('per', '?')}:{limit.get('rate', '?')}"
            # None: a request larger than the bucket, which no wait admits
            f" retry={'never' if retry is None else f'{retry}s'}"
        )
    signals = record.get("signals")
    if isinstance(signals, dict) and signals:
        top = sorted(
            ((name, value) for name, value in signals.items() if isinstance(value, int | float)),
            key=lambda item: -item[1],
        )[:3]
        parts.append("top: " + " ".join(f"{name}={value:.1f}" for name, value in top))
    if record.get("mode") == "observe":
        parts.append("(observe: not enforced)")
    text = printable("  ".join(parts))
    dropped = record.get("dropped")
    if dropped:
        text = f"{'':24}  !! {printable(str(dropped))} record(s) lost before this one\n{text}"
    return text


def _reload_text(record: dict[str, Any]) -> str:
    """A policy reload (``guardrail.reload``): which policy is in force after it, and why."""
    action, policy = record.get("action"), _short(record.get("policy"))
    how = f"({record.get('trigger', '?')}: {record.get('source', '?')})"
    if action == "policy_reload":
        was = _short(record.get("previous"))
        return f"{action:<{_ACTION_WIDTH}}   -  {policy} in force, was {was} {how}"
    errors = record.get("errors")
    errors = errors if isinstance(errors, list) else []
    where = ", ".join(
        f"line {e.get('line')} {e.get('key')}" if "key" in e else str(e.get("error"))
        for e in errors
        if isinstance(e, dict)
    )
    return f"{action}   -  refused {how}, {policy} stays in force; errors: {where or '?'}"


def _short(digest: object) -> str:
    return str(digest)[:19] + "…" if isinstance(digest, str) and len(digest) > 20 else str(digest)


def repeats(record: dict[str, Any]) -> int:
    """How many decisions ``record`` stands for: its ``repeated`` count, else 1."""
    count = record.get("repeated")
    if isinstance(count, int) and not isinstance(count, bool) and count > 1:
        return count
    return 1


def printable(text: str) -> str:
    """``text`` with every character that is not printable (C0 and C1 controls such as CR, LF,
    ESC and CSI, bidi overrides and other format characters, line and paragraph separators,
    lone surrogates) written as a Python escape: what a client put in a path or header reaches
    an operator's terminal as text, never as a command to it."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _subject_text(record: dict[str, Any]) -> str:
    subject = record.get("subject")
    if not isinstance(subject, dict):
        return "subject=?"
    shown = [f"{key}={subject[key]}" for key in ("api_key", "account", "ip") if subject.get(key)]
    return " ".join(shown) or "subject=-"


def _format_raw(location: Location, raw: bytes) -> tuple[str, bool]:
    text, ok, _ = format_raw(location, raw)
    return text, ok


def format_raw(location: Location, raw: bytes) -> tuple[str, bool, float | None]:
    """The line for a human, whether it was a record, and the record's time (if it has one)."""
    record = parse_line(raw)
    if record is None:
        return f"!! {location}: not an audit record: {raw[:60]!r}", False, None
    try:
        when: float | None = parse_ts(str(record["ts"]))
    except (KeyError, ValueError):
        when = None
    return format_record(record), True, when


def tail(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    follow: bool = False,
    out: TextIO | None = None,
    *,
    sleep: Callable[[float], object] = time.sleep,
    interval: float = 1.0,
    stop: Callable[[], bool] | None = None,
    lines: int | None = None,
) -> int:
    """Prints the trail (rotated files first), or its last ``lines`` records; with ``follow``
    keeps printing new records, across rotations, until ``stop()`` is true or Ctrl-C.
    Returns the exit code (0). ``AuditError`` when there is no trail.

    Several trails (or a glob, or a Redis stream URI): their records merged by time."""
    if not isinstance(path, str | os.PathLike) or _several(path):
        from guardrail.audit.merged import tail_many

        specs = [os.fspath(p) for p in ([path] if isinstance(path, str | os.PathLike) else path)]
        if len(specs) != 1 or _several(specs[0]):
            return tail_many(
                specs, follow, out, sleep=sleep, interval=interval, stop=stop, lines=lines
            )
        path = specs[0]
    stream = out if out is not None else sys.stdout
    follower = _Follower(Path(path), stream, lines)
    follower.start()
    if follow:
        try:
            while True:
                follower.poll()
                if stop is not None and stop():
                    break
                sleep(interval)
        except KeyboardInterrupt:
            pass
        finally:
            follower.close()
    else:
        follower.close()
    if follower.malformed:
        print(f"-- {follower.malformed} line(s) were not audit records", file=stream)
    return 0


def _several(spec: str | os.PathLike[str]) -> bool:
    """A glob, or a stream: maybe several trails, read through :mod:`guardrail.audit.sources`."""
    text = os.fspath(spec)
    return _is_stream_name(text) or (any(c in text for c in "*?[") and not Path(text).exists())


class _Follower:
    """Reads the live file through an open handle and notices rotation by its inode changing."""

    def __init__(self, path: Path, out: TextIO, last: int | None) -> None:
        self.path = path
        self.out = out
        self.malformed = 0
        self._backlog: deque[str] | None = deque(maxlen=last) if last is not None else None
        self._handle: IO[bytes] | None = None
        self._inode: int | None = None
        self._number = 0
        self._partial = b""
        self.collected: list[tuple[float | None, str]] | None = None
        """When a list: what would be printed goes there, with each record's time."""

    def start(self) -> None:
        files = trail_files(self.path)
        for file in files:
            if file != self.path:
                self._print_file(file)
        self._open_live()
        self._read_live(final=False)
        if self._backlog is not None:
            for text in self._backlog:
                print(text, file=self.out)
            self._backlog = None
        self.out.flush()

    def start_at_end(self) -> None:
        """Follows from the current end of the live file, printing nothing of what is there."""
        self._open_live()
        if self._handle is not None:
            self._number = self._handle.read().count(b"\n")

    def poll(self) -> None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            stat = None  # between a rotation's rename and the new file: wait for it
        if stat is not None and self._handle is not None and stat.st_ino != self._inode:
            self._read_live(final=True)  # the rest of the file that was rotated away
            old_inode = self._inode
            self._close_live()
            for file in self._rotated_since(old_inode):
                self._print_file(file)
        elif stat is not None and self._handle is not None and stat.st_size < self._handle.tell():
            self._handle.seek(0)  # truncated in place: start over
            self._number = 0
            self._partial = b""
        if self._handle is None and stat is not None:
            self._open_live()
        self._read_live(final=False)
        self.out.flush()

    def close(self) -> None:
        self._read_live(final=True)
        self._close_live()
        self.out.flush()

    def _rotated_since(self, inode: int | None) -> list[Path]:
        """Rotated files newer than the one with ``inode`` (several rotations between polls)."""
        files = rotated_files(self.path)
        for index, file in enumerate(files):
            try:
                if os.stat(file).st_ino == inode:
                    return files[index + 1 :]
            except FileNotFoundError:
                continue
        return files  # ours was deleted (keep exceeded): every rotated file is newer

    def _open_live(self) -> None:
        try:
            self._handle = open(self.path, "rb")  # noqa: SIM115 - held open to follow the file
        except FileNotFoundError:
            return
        self._inode = os.fstat(self._handle.fileno()).st_ino
        self._number = 0
        self._partial = b""

    def _close_live(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _read_live(self, *, final: bool) -> None:
        if self._handle is None:
            return
        data = self._partial + self._handle.read()
        complete, _, self._partial = data.rpartition(b"\n")
        if complete or data.endswith(b"\n"):
            self._emit_lines(str(self.path), complete.split(b"\n"), self._number)
            self._number += complete.count(b"\n") + 1
        if final and self._partial:
            # A writer never leaves half a line in a file it has rotated away or stopped using.
            self._emit_lines(str(self.path), [self._partial], self._number)
            self._number += 1
            self._partial = b""

    def _print_file(self, file: Path) -> None:
        try:
            with open(file, "rb") as handle:
                raws = [raw.rstrip(b"\n") for raw in handle]
        except FileNotFoundError:
            return
        self._emit_lines(str(file), raws, 0)

    def _emit_lines(self, file: str, raws: Iterable[bytes], before: int) -> None:
        for offset, raw in enumerate(raws, start=1):
            text, ok, when = format_raw(Location(file, before + offset), raw)
            if not ok:
                self.malformed += 1
            if self.collected is not None:
                self.collected.append((when, text))
            elif self._backlog is not None:
                self._backlog.append(text)
            else:
                print(text, file=self.out)


# --- summary -----------------------------------------------------------------------------------


def summary(
    path: Spec | Sequence[Spec],
    since_seconds: float | None = None,
    now: float | None = None,
    *,
    top: int = 10,
) -> dict[str, Any]:
    """Counts over the trails (or their last ``since_seconds`` before ``now``), JSON-ready."""
    from guardrail.audit.sources import sources

    specs = [path] if isinstance(path, str | os.PathLike) else list(path)
    trails = sources(specs)
    current = time.time() if now is None else now
    cutoff = None if since_seconds is None else current - since_seconds
    malformed: list[Location] = []
    by_action: Counter[str] = Counter()
    by_route: dict[str, Counter[str]] = {}
    subjects: dict[str, Counter[str]] = {}
    signal_sum: dict[str, float] = {}
    signal_count: Counter[str] = Counter()
    files = [file for trail in trails for file in trail.files()]
    writers: Counter[str] = Counter()
    unmatched: Counter[str] = Counter()  # "METHOD /path" no policy route matched
    events: Counter[str] = Counter()  # records of the trail itself: reloads, seals
    total = decisions = dropped = undated = 0
    first: float | None = None
    last: float | None = None
    for _, record in records_of(trails, malformed):
        try:
            when: float | None = parse_ts(str(record["ts"]))
        except (KeyError, ValueError):
            when = None
        if cutoff is not None and (when is None or when < cutoff):
            undated += when is None
            continue
        total += 1
        if when is not None:
            first = when if first is None else min(first, when)
            last = when if last is None else max(last, when)
        action = str(record.get("action", "?"))
        writer = record.get("writer")
        writers[writer if isinstance(writer, str) else _UNNAMED] += 1
        if action in EVENTS:
            events[action] += 1
            continue
        count = repeats(record)
        decisions += count
        by_action[action] += count
        by_route.setdefault(str(record.get("route") or "-"), Counter())[action] += count
        if isinstance(record.get("dropped"), int):
            dropped += record["dropped"]
        if action == "unmatched" and isinstance(record.get("paths"), dict):
            for request, n in record["paths"].items():
                unmatched[str(request)] += n if isinstance(n, int) else 0
        subject = record.get("subject")
        if action != "allow" and isinstance(subject, dict):
            for member, value in subject.items():
                subjects.setdefault(str(member), Counter())[str(value)] += count
        signals = record.get("signals")
        if isinstance(signals, dict):
            for name, value in signals.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    signal_sum[name] = signal_sum.get(name, 0.0) + value
                    signal_count[name] += 1
    return {
        "files": files,
        "since": None if cutoff is None else format_ts(cutoff),
        "now": format_ts(current),
        "records": total,
        "decisions": decisions,  # records with "repeated": N stand for N decisions
        "events": dict(events.most_common()),
        "first": None if first is None else format_ts(first),
        "last": None if last is None else format_ts(last),
        "malformed": [str(location) for location in malformed],
        "undated": undated,
        "dropped": dropped,
        "writers": dict(sorted(writers.items())),  # records per writer (worker process)
        "by_action": dict(by_action.most_common()),
        "by_route": {
            route: {"total": sum(counts.values()), **dict(counts.most_common())}
            for route, counts in sorted(by_route.items(), key=lambda kv: -sum(kv[1].values()))
        },
        "top_subjects": {
            member: [{"value": value, "count": count} for value, count in counts.most_common(top)]
            for member, counts in sorted(subjects.items())
        },
        "top_signals": [
            {"name": name, "sum": round(value, 3), "count": signal_count[name]}
            for name, value in sorted(signal_sum.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        ],
        "unmatched": [{"request": r, "count": n} for r, n in unmatched.most_common(top)],
    }


#: Records about the trail or the policy, not decisions about requests.
EVENTS = frozenset({"policy_reload", "policy_reload_refused", "sealed"})


def _events(data: dict[str, Any]) -> str:
    events = data.get("events") or {}
    if not events:
        return ""
    named = ", ".join(f"{kind} {n}" for kind, n in events.items())
    return f"; {sum(events.values())} events: {named}"


def render_summary(data: dict[str, Any]) -> str:
    """The summary as aligned tables for a terminal."""
    window = f"since {data['since']}" if data["since"] else "whole trail"
    writers = data.get("writers") or {}
    lines = [
        f"audit summary ({window}; {len(data['files'])} file(s), {len(writers)} writer(s))",
        f"records: {data['records']} ({data['decisions']} decisions{_events(data)})   "
        f"from {data['first'] or '-'} to {data['last'] or '-'}",
    ]
    if data["dropped"]:
        lines.append(f"!! {data['dropped']} record(s) reported lost by the writer")
    if data["malformed"]:
        lines.append(
            f"!! {len(data['malformed'])} line(s) not audit records, first at "
            f"{data['malformed'][0]}"
        )
    lines += ["", "by action"]
    lines += [f"  {action:<18}{count:>10}" for action, count in data["by_action"].items()]
    lines += ["", "by route"]
    for route, counts in data["by_route"].items():
        detail = ", ".join(f"{a}={n}" for a, n in counts.items() if a != "total")
        lines.append(f"  {route:<18}{counts['total']:>10}   {detail}")
    lines += ["", "top subjects (decisions other than allow)"]
    for member, rows in data["top_subjects"].items():
        for row in rows:
            lines.append(f"  {member:<8} {row['value']:<40}{row['count']:>8}")
    if not data["top_subjects"]:
        lines.append("  (none)")
    lines += ["", "top signals (summed contribution)"]
    lines += [
        f"  {row['name']:<28}{row['sum']:>12.1f}{row['count']:>10} records"
        for row in data["top_signals"]
    ] or ["  (none)"]
    if data.get("unmatched"):
        lines += ["", "unmatched requests (no policy route names the path)"]
        lines += [f"  {row['request']:<58}{row['count']:>8}" for row in data["unmatched"]]
    return "\n".join(printable(line) for line in lines)  # subject values are the client's


def records_of(
    trails: Sequence[Any], malformed: list[Location]
) -> Iterator[tuple[Location, dict[str, Any]]]:
    """Every parsed record of ``trails`` (``sources``), in order; where a line is not one, its
    location is added to ``malformed``. Seals (the end of a writer's keyed chain) decide
    nothing: they are left out."""
    for trail in trails:
        for location, raw in trail.lines():
            record = parse_line(raw)
            if record is None:
                malformed.append(location)
                continue
            if record.get("action") != SEALED:
                yield location, record


_UNNAMED = "(records without a writer)"

Spec = str | os.PathLike[str]


def _is_stream_name(name: str) -> bool:
    return name.split("://", 1)[0].lower() in ("redis", "rediss") and "://" in name
