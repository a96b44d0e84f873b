"""``guardrail audit verify``: walks each writer's hash chain through a trail."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from guardrail.audit.reader import (
    _UNNAMED,
    Location,
    Spec,
    _is_stream_name,
    parse_line,
    repeats,
)
from guardrail.audit.record import GENESIS, link

#: How many recent lines verify remembers, to recognise a line chaining from one of them.
_RECENT = 4096

_SHARED_FILE = (
    "several writers appended to this one file, each chaining its own lines (workers sharing "
    "a file:// sink, before records named their writer): give each its own trail with {pid} in "
    "the path (file://guardrail-audit-{pid}.jsonl), or upgrade: records that name their writer "
    "(a Redis stream sink shared by every worker, say) are verified writer by writer"
)


@dataclass(slots=True)
class _Chain:
    """One writer's chain as verify walks it."""

    expected: str  # the prev its next line must carry
    last: Location
    first: Location
    anchor: str
    seq: int | None
    first_seq: int | None
    records: int = 0


def verify(paths: Spec | Sequence[Spec]) -> tuple[bool, str]:
    """Walks the hash chains of each trail (a file with its rotations, a glob, a Redis stream
    URI), writer by writer: each writer's records must link one to the next, and its first
    record start at genesis or continue a line earlier in that trail. ``(True, report)`` when
    every chain is intact; ``(False, message)`` naming the first broken link."""
    from guardrail.audit.sources import sources

    specs = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    trails = sources(specs)
    reports: list[str] = []
    for trail in trails:
        ok, report = _verify_trail(trail)
        shown = report if len(trails) == 1 else f"{trail.name}: {report}"
        if not ok:
            return False, shown
        reports.append(shown)
    return True, "\n".join(reports)


def _verify_trail(trail: Any) -> tuple[bool, str]:
    chains: dict[str | None, _Chain] = {}
    recent: dict[str, Location] = {}  # link -> line, for the last _RECENT lines (insertion order)
    unresolved: dict[str, tuple[str | None, int]] = {}  # a writer's first prev -> (writer, line)
    head_missing = False
    checked = dropped = decisions = 0
    lines = trail.lines()
    for number, (location, raw) in enumerate(lines, start=1):
        record = parse_line(raw)
        if record is None:
            return False, f"{location}: broken: not a JSON audit record: {raw[:80]!r}"
        prev = record.get("prev")
        if not isinstance(prev, str):
            return False, f'{location}: broken: no "prev" (was hash_chain off?)'
        named = record.get("writer")
        writer = named if isinstance(named, str) else None
        seq = record.get("seq") if isinstance(record.get("seq"), int) else None
        chain = chains.get(writer)
        if chain is None:
            if number == 1:
                head_missing = prev != GENESIS
            if prev == GENESIS:
                anchor = "starts at genesis"
            elif prev in recent:
                anchor = f"continues the trail after {recent[prev]}"
            elif number == 1:
                anchor = (
                    "starts after records no longer present (rotated away?): its first link "
                    "cannot be checked"
                )
            else:
                anchor = ""  # resolved by a second reading, below
                unresolved[prev] = (writer, number)
            chain = chains[writer] = _Chain(prev, location, location, anchor, None, seq)
        elif prev != chain.expected:
            if writer is None:
                return False, _broken_message(
                    location, chain.last, prev, chain.expected, lines, recent.get(prev)
                )
            return False, _broken_writer(location, writer, chain, lines)
        elif seq is not None and chain.seq is not None and seq != chain.seq + 1:
            return False, (
                f"{location}: broken: writer {writer} numbers this line {seq} after "
                f"{chain.seq} ({chain.last}), yet its chain links them"
            )
        chain.seq = seq
        chain.records += 1
        checked += 1
        decisions += repeats(record)
        if isinstance(record.get("dropped"), int):
            dropped += record["dropped"]
        chain.expected = link(raw)
        chain.last = location
        recent[chain.expected] = location
        if len(recent) > _RECENT:
            del recent[next(iter(recent))]
    files = trail.files()
    if checked == 0:
        return True, f"OK: trail is empty ({len(files)} file(s))"
    if unresolved:
        broken = _resolve_anchors(trail, chains, unresolved, head_missing)
        if broken:
            return False, broken
    where = f"in {trail.name}" if _is_stream_name(trail.name) else f"in {len(files)} file(s)"
    note = f"; {dropped} record(s) reported lost by the writer" if dropped else ""
    standing = f" (standing for {decisions} decisions)" if decisions != checked else ""
    if len(chains) == 1:
        ((writer, chain),) = chains.items()
        by = "" if writer is None else f" by writer {writer}"
        return True, (
            f"OK: {checked} records{standing} {where}{by}, hash chain intact, {chain.anchor}{note}"
        )
    rows = [
        f"  {writer or _UNNAMED}: {chain.records} record(s){_seq_range(chain)}, {chain.anchor}"
        for writer, chain in chains.items()
    ]
    return True, "\n".join(
        [
            f"OK: {checked} records{standing} {where} by {len(chains)} writers, each writer's "
            f"hash chain intact{note}",
            *rows,
        ]
    )


def _seq_range(chain: _Chain) -> str:
    if chain.first_seq is None or chain.seq is None:
        return ""
    return f" (seq {chain.first_seq}-{chain.seq})"


def _resolve_anchors(
    trail: Any,
    chains: dict[str | None, _Chain],
    unresolved: dict[str, tuple[str | None, int]],
    head_missing: bool,
) -> str | None:
    """A second reading: where each writer's first record links to. Beyond the last _RECENT
    lines, so rare (a writer that started long before its first record)."""
    for number, (location, raw) in enumerate(trail.lines(), start=1):
        found = unresolved.get(link(raw))
        if found is not None and number < found[1]:
            chains[found[0]].anchor = f"continues the trail after {location}"
            del unresolved[link(raw)]
            if not unresolved:
                return None
    for writer, _ in unresolved.values():
        chain = chains[writer]
        if head_missing:  # the trail's start is gone (rotated, trimmed): so may the anchor be
            chain.anchor = (
                "starts after records no longer present: its first link cannot be checked"
            )
            continue
        return (
            f"{chain.first}: broken: the first record of writer {writer or _UNNAMED} links to "
            "no earlier line of this trail, which starts at genesis: a line was removed, or "
            "this one comes from another trail"
        )
    return None


def _broken_writer(
    location: Location, writer: str, chain: _Chain, rest: Iterable[tuple[Location, bytes]]
) -> str:
    message = (
        f"{location}: broken link in the chain of writer {writer}: its prev does not match "
        f"that writer's line before ({chain.last})"
    )
    needle = f'"prev":"{chain.expected}"'.encode()
    for later, raw in rest:
        if needle in raw:
            return message + f"; the line that belongs here is at {later}: lines out of order"
    return message + f"; {chain.last} was altered, or a line after it removed or inserted"


def _broken_message(
    location: Location,
    previous: Location | None,
    prev: str,
    expected: str,
    rest: Iterable[tuple[Location, bytes]],
    forks_from: Location | None,
) -> str:
    message = f"{location}: broken link: its prev does not match the line before ({previous})"
    # Look ahead for the line that should have come here, to tell a reordering from a loss.
    needle = f'"prev":"{expected}"'.encode()
    for later, raw in rest:
        if needle in raw:
            # Two chains going on side by side: this line continues an earlier line (or starts
            # afresh), while the chain it interrupted goes on further down.
            if forks_from is not None:
                return message + (
                    f" but an earlier one ({forks_from}), and the chain it interrupts goes on at "
                    f"{later}: {_SHARED_FILE}"
                )
            if prev == GENESIS:
                return message + (
                    f" but starts a new chain, and the chain it interrupts goes on at {later}: "
                    + _SHARED_FILE
                )
            return message + f"; the line that belongs here is at {later}: lines out of order"
    return message + f"; {previous} was altered, or a line after it removed or inserted"
