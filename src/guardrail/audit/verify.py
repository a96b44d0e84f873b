"""``guardrail audit verify``: walks each writer's hash chain through a trail.

What a chain shows, and what it cannot:

- plain SHA-256: a line edited, removed, inserted or moved by accident or by a tool; anyone
  who can write the trail can recompute every link, so it proves nothing against them;
- keyed (``audit.chain_key``), checked with the key: the same against anyone without the key,
  and a writer's chain cannot be started afresh or moved (its anchor names the writer and the
  line it follows). Records cut from the *end* of a writer's chain break nothing; the seal it
  writes when it stops does not come back, so the chain is reported as ending unsealed (a
  warning: a crash or a writer still running looks the same). A writer's whole chain removed,
  seal and all, shows only if a later writer anchored after one of its lines; records cut from
  the start of the trail look like rotation (the first writer's seq says where it began);
- keyed, without the key: only the structure (each writer's seq counts up by one, no line
  after a seal). Never reported intact: exit code 3.

The key is symmetric: whoever holds it (the serving process, the verifier) can rewrite the
trail undetected. It guards against those who can write where the trail is kept (a log
shipper, a Redis user, a backup) but cannot read the serving process's secrets.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from guardrail.audit.chain import KEYED, SEALED, KeyedChain
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


Status = Literal["intact", "broken", "unchecked"]
EXIT = {"intact": 0, "broken": 1, "unchecked": 3}
"""``guardrail audit verify``'s exit code: 3 says a keyed chain was read without its key."""

_UNSEALED = "(still writing, stopped without closing, or records cut from the end)"
_NO_KEY = "its links cannot be checked without the key (--policy POLICY or --key env:NAME)"


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    report: str
    """What verify prints: the report, or the first broken link."""


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
    keyed: bool = False
    sealed: Location | None = None
    matched: int = 0  # links checked under the key


def verify(paths: Spec | Sequence[Spec], key: bytes | None = None) -> tuple[bool, str]:
    """Walks the hash chains of each trail (a file with its rotations, a glob, a Redis stream
    URI), writer by writer: each writer's records must link one to the next, and its first
    record start at genesis or continue a line earlier in that trail. ``(True, report)`` when
    every chain is intact; ``(False, message)`` naming the first broken link, or saying that a
    keyed chain was not checked (no ``key``: the secret ``audit.chain_key`` names)."""
    verdict = check(paths, key)
    return verdict.status == "intact", verdict.report


def check_trail(trail: Any, key: bytes | None = None) -> Verdict:
    """:func:`check` of one trail of :func:`guardrail.audit.sources.sources`."""
    return _Walk(trail, KeyedChain(key) if key is not None else None).run()


def check(paths: Spec | Sequence[Spec], key: bytes | None = None) -> Verdict:
    """:func:`verify`, telling a keyed chain read without its key (``unchecked``) apart."""
    from guardrail.audit.sources import sources

    specs = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    trails = sources(specs)
    keyed = KeyedChain(key) if key is not None else None
    reports: list[str] = []
    status: Status = "intact"
    for trail in trails:
        verdict = _Walk(trail, keyed).run()
        shown = verdict.report if len(trails) == 1 else f"{trail.name}: {verdict.report}"
        if verdict.status == "broken":
            return Verdict("broken", shown)
        if verdict.status == "unchecked":
            status = "unchecked"
        reports.append(shown)
    return Verdict(status, "\n".join(reports))


class _Walk:
    """One reading of one trail, line by line."""

    def __init__(self, trail: Any, key: KeyedChain | None) -> None:
        self.trail = trail
        self.key = key
        self.chains: dict[str | None, _Chain] = {}
        # link -> line, for the last _RECENT lines (insertion order); keyed: under the key
        self.recent: dict[str, Location] = {}
        self.recent_keyed: dict[str, Location] = {}
        self.unresolved: dict[str, tuple[str | None, int]] = {}  # first prev -> (writer, line)
        self.head_missing = False
        self.first_keyed: Location | None = None
        self.plain_before = 0  # plain records before the first keyed one
        self.checked = self.dropped = self.decisions = 0

    def run(self) -> Verdict:
        lines = self.trail.lines()
        for number, (location, raw) in enumerate(lines, start=1):
            broken = self._line(number, location, raw, lines)
            if broken is not None:
                return Verdict("broken", broken)
        files = self.trail.files()
        if self.checked == 0:
            return Verdict("intact", f"OK: trail is empty ({len(files)} file(s))")
        if self.key is not None and self.first_keyed is None:
            first = next(iter(self.chains.values())).first
            return Verdict(
                "broken",
                f"{first}: broken: a plain sha256 chain where a keyed one was expected: written "
                "without audit.chain_key, or rewritten by someone without the key",
            )
        if self.unresolved:
            broken = _resolve_anchors(self, self.trail)
            if broken:
                return Verdict("broken", broken)
        return self._report(files)

    def _line(
        self, number: int, location: Location, raw: bytes, rest: Iterable[tuple[Location, bytes]]
    ) -> str | None:
        record = parse_line(raw)
        if record is None:
            return f"{location}: broken: not a JSON audit record: {raw[:80]!r}"
        prev = record.get("prev")
        if not isinstance(prev, str):
            return f'{location}: broken: no "prev" (was hash_chain off?)'
        keyed = prev.startswith(KEYED)
        if keyed and self.first_keyed is None:
            self.first_keyed = location
        elif not keyed and self.first_keyed is not None and self.key is not None:
            return (
                f"{location}: broken: a plain sha256 link after keyed ones (from "
                f"{self.first_keyed}): rewritten by someone without the key, or chain_key was "
                "turned off"
            )
        named = record.get("writer")
        writer = named if isinstance(named, str) else None
        seq = record.get("seq") if isinstance(record.get("seq"), int) else None
        chain = self.chains.get(writer)
        if chain is None:
            chain = self._first(number, location, prev, keyed, writer, seq)
        else:
            broken = self._next(location, raw, prev, keyed, writer, seq, chain, rest)
            if broken is not None:
                return broken
        if record.get("action") == SEALED and keyed:
            if self.key is not None and not self.key.sealed(raw):
                return (
                    f"{location}: broken: the seal of writer {writer or _UNNAMED} does not "
                    "carry its own MAC under this key: altered, or not written with it"
                )
            chain.sealed = location
        else:
            self._count(record, chain, keyed)
        chain.seq = seq
        chain.last = location
        self._remember(location, raw, chain, keyed)
        return None

    def _first(
        self,
        number: int,
        location: Location,
        prev: str,
        keyed: bool,
        writer: str | None,
        seq: int | None,
    ) -> _Chain:
        if keyed:
            anchor = self._keyed_anchor(number, prev, writer)
        else:
            if number == 1:
                self.head_missing = prev != GENESIS
            if prev == GENESIS:
                anchor = "starts at genesis"
            elif prev in self.recent:
                anchor = f"continues the trail after {self.recent[prev]}"
            elif number == 1:
                anchor = _HEAD_GONE
            else:
                anchor = ""  # resolved by a second reading, below
                self.unresolved[prev] = (writer, number)
        chain = _Chain(prev, location, location, anchor, None, seq, keyed=keyed)
        self.chains[writer] = chain
        return chain

    def _keyed_anchor(self, number: int, prev: str, writer: str | None) -> str:
        if self.key is None:
            return "its anchor not checked"
        name = writer or ""
        if self.key.matches(prev, self.key.anchor(name, None)):
            return "starts at genesis"
        if number == 1:
            self.head_missing = True
            return _HEAD_GONE
        for after in reversed(self.recent_keyed):  # most often the line just before
            if self.key.matches(prev, self.key.anchor(name, after)):
                return f"continues the trail after {self.recent_keyed[after]}"
        self.unresolved[prev] = (writer, number)
        return ""

    def _next(
        self,
        location: Location,
        raw: bytes,
        prev: str,
        keyed: bool,
        writer: str | None,
        seq: int | None,
        chain: _Chain,
        rest: Iterable[tuple[Location, bytes]],
    ) -> str | None:
        who = writer or _UNNAMED
        if chain.sealed is not None:
            return (
                f"{location}: broken: writer {who} sealed its chain at {chain.sealed}, and a "
                "writer writes nothing after its seal: a line inserted or moved"
            )
        if keyed != chain.keyed:
            return (
                f"{location}: broken: the chain of writer {who} switches between plain sha256 "
                f"and keyed links after {chain.last}: rewritten without the key?"
            )
        if keyed and self.key is None:
            if seq is None or chain.seq is None or seq != chain.seq + 1:
                return (
                    f"{location}: broken: writer {who} numbers this line {seq} after "
                    f"{chain.seq} ({chain.last}): a line removed, inserted or moved (the keyed "
                    "links themselves were not checked: no key)"
                )
            return None
        linked = (
            self.key.matches(prev, chain.expected) if keyed and self.key else prev == chain.expected
        )
        if not linked:
            if writer is None and not keyed:
                return _broken_message(
                    location, chain.last, prev, chain.expected, rest, self.recent.get(prev)
                )
            message = _broken_writer(location, who, chain, rest)
            if keyed and not chain.matched and chain.anchor in ("", _HEAD_GONE):
                message += "; no link of this chain matches the key: written with another key?"
            return message
        if seq is not None and chain.seq is not None and seq != chain.seq + 1:
            return (
                f"{location}: broken: writer {who} numbers this line {seq} after "
                f"{chain.seq} ({chain.last}), yet its chain links them"
            )
        chain.matched += keyed
        return None

    def _count(self, record: dict[str, Any], chain: _Chain, keyed: bool) -> None:
        chain.records += 1
        self.checked += 1
        self.plain_before += not keyed and self.first_keyed is None
        self.decisions += repeats(record)
        if isinstance(record.get("dropped"), int):
            self.dropped += record["dropped"]

    def _remember(self, location: Location, raw: bytes, chain: _Chain, keyed: bool) -> None:
        plain = link(raw)
        self.recent[plain] = location
        if len(self.recent) > _RECENT:
            del self.recent[next(iter(self.recent))]
        if self.key is not None:
            under_key = self.key.link(raw)
            self.recent_keyed[under_key] = location
            if len(self.recent_keyed) > _RECENT:
                del self.recent_keyed[next(iter(self.recent_keyed))]
            chain.expected = under_key if keyed else plain
        elif not keyed:
            chain.expected = plain

    def _report(self, files: list[str]) -> Verdict:
        name = self.trail.name
        where = f"in {name}" if _is_stream_name(name) else f"in {len(files)} file(s)"
        note = f"; {self.dropped} record(s) reported lost by the writer" if self.dropped else ""
        if self.plain_before and self.first_keyed is not None and self.key is not None:
            note += (
                f"; the {self.plain_before} plain sha256 record(s) before {self.first_keyed} "
                "(written before chain_key was set) are not authenticated by the key"
            )
        checked, decisions = self.checked, self.decisions
        standing = f" (standing for {decisions} decisions)" if decisions != checked else ""
        unchecked = self.first_keyed is not None and self.key is None
        kind = "keyed chain (hmac-sha256)" if self.first_keyed is not None else "hash chain"
        state = f"{kind} read, {_NO_KEY}" if unchecked else f"{kind} intact"
        head = "UNCHECKED" if unchecked else "OK"
        status: Status = "unchecked" if unchecked else "intact"
        warnings = [
            f"warning: writer {writer or _UNNAMED} ends unsealed at {chain.last} {_UNSEALED}"
            for writer, chain in self.chains.items()
            if chain.keyed and chain.sealed is None
        ]
        if len(self.chains) == 1:
            ((writer, chain),) = self.chains.items()
            by = "" if writer is None else f" by writer {writer}"
            return Verdict(
                status,
                "\n".join(
                    [
                        f"{head}: {checked} records{standing} {where}{by}, {state}, "
                        f"{chain.anchor}{_sealed(chain)}{note}",
                        *warnings,
                    ]
                ),
            )
        rows = [
            f"  {writer or _UNNAMED}: {chain.records} record(s){_seq_range(chain)}, "
            f"{chain.anchor}{_sealed(chain)}"
            for writer, chain in self.chains.items()
        ]
        each = f"each writer's {state}"
        return Verdict(
            status,
            "\n".join(
                [
                    f"{head}: {checked} records{standing} {where} by {len(self.chains)} writers, "
                    f"{each}{note}",
                    *rows,
                    *warnings,
                ]
            ),
        )


_HEAD_GONE = (
    "starts after records no longer present (rotated away?): its first link cannot be checked"
)


def _sealed(chain: _Chain) -> str:
    return f", sealed at {chain.sealed}" if chain.sealed is not None else ""


def _seq_range(chain: _Chain) -> str:
    if chain.first_seq is None or chain.seq is None:
        return ""
    last = chain.seq - 1 if chain.sealed is not None else chain.seq  # the seal is no record
    return f" (seq {chain.first_seq}-{last})"


def _resolve_anchors(walk: _Walk, trail: Any) -> str | None:
    """A second reading: where each writer's first record links to. Beyond the last _RECENT
    lines, so rare (a writer that started long before its first record)."""
    unresolved, chains, key = walk.unresolved, walk.chains, walk.key
    for number, (location, raw) in enumerate(trail.lines(), start=1):
        found = unresolved.get(link(raw))
        if found is not None and number < found[1] and not chains[found[0]].keyed:
            chains[found[0]].anchor = f"continues the trail after {location}"
            del unresolved[link(raw)]
        if key is not None:
            after = key.link(raw)
            for prev, (writer, line) in list(unresolved.items()):
                if number < line and key.matches(prev, key.anchor(writer or "", after)):
                    chains[writer].anchor = f"continues the trail after {location}"
                    del unresolved[prev]
        if not unresolved:
            return None
    for writer, _ in unresolved.values():
        chain = chains[writer]
        if walk.head_missing:  # the trail's start is gone (rotated, trimmed): so may the anchor be
            chain.anchor = (
                "starts after records no longer present: its first link cannot be checked"
            )
            continue
        if chain.keyed:
            return (
                f"{chain.first}: broken: the first record of writer {writer or _UNNAMED} is "
                "anchored neither at genesis nor after an earlier line of this trail under this "
                "key: the line it follows was removed, this one comes from another trail or "
                "writer, or it was forged"
            )
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
