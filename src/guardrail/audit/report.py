"""What ``guardrail audit report`` draws, counted from the trails: decisions over time by
action, the score distribution, the subjects decided about most and their signals, the
networks and client builds that carry many accounts, and token spend by subject.

Read through the same sources as ``audit summary`` (files, globs, Redis streams); a record
with ``"repeated": N`` counts N times. Values are kept as the trail holds them: the page that
renders them escapes every one (subjects, paths and signal names are the client's).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from guardrail.audit.reader import Location, records_of, repeats
from guardrail.audit.record import format_ts, parse_ts

#: Widths a time bucket can take, in seconds: the smallest that keeps the chart under
#: MAX_BUCKETS bars is used.
STEPS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 72
SCORE_BINS = 20  # 5-point bins over 0-100
TOP = 12


@dataclass(slots=True)
class Subject:
    """A principal (account, else API key hash, else address) and what was decided about it."""

    name: str
    kind: str  # account | api_key | ip
    decisions: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    max_score: float = 0.0
    signals: dict[str, float] = field(default_factory=dict)  # summed points
    signal_records: Counter[str] = field(default_factory=Counter)
    networks: set[str] = field(default_factory=set)
    clients: set[str] = field(default_factory=set)
    tokens_used: int = 0
    tokens_reserved: int = 0

    def top_signals(self, count: int = 4) -> list[tuple[str, float]]:
        """The signals that weighed most, with their mean points over the records that had
        them."""
        top = sorted(self.signals.items(), key=lambda kv: (-kv[1], kv[0]))[:count]
        return [(name, total / self.signal_records[name]) for name, total in top]


@dataclass(slots=True)
class Carrier:
    """A network (subnet) or a client build, and the accounts seen through it."""

    name: str
    accounts: set[str] = field(default_factory=set)
    decisions: int = 0
    actions: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class Report:
    files: list[str]
    generated: str
    since: str | None
    first: float | None = None
    last: float | None = None
    records: int = 0
    decisions: int = 0
    malformed: int = 0
    dropped: int = 0
    by_action: Counter[str] = field(default_factory=Counter)
    step: int = 3600
    timeline: dict[int, Counter[str]] = field(default_factory=dict)  # bucket start -> actions
    scores: list[Counter[str]] = field(
        default_factory=lambda: [Counter() for _ in range(SCORE_BINS)]
    )  # by action
    subjects: list[Subject] = field(default_factory=list)
    networks: list[Carrier] = field(default_factory=list)
    clients: list[Carrier] = field(default_factory=list)
    spenders: list[Subject] = field(default_factory=list)

    @property
    def actions(self) -> list[str]:
        """Every action in the trail, most frequent first."""
        return [action for action, _ in self.by_action.most_common()]


def build(
    specs: Sequence[str | os.PathLike[str]],
    since_seconds: float | None = None,
    now: float | None = None,
    *,
    top: int = TOP,
) -> Report:
    """The report over ``specs`` (or their last ``since_seconds`` before ``now``)."""
    from guardrail.audit.sources import sources

    trails = sources(specs)
    current = time.time() if now is None else now
    cutoff = None if since_seconds is None else current - since_seconds
    report = Report(
        files=[file for trail in trails for file in trail.files()],
        generated=format_ts(current),
        since=None if cutoff is None else format_ts(cutoff),
    )
    malformed: list[Location] = []
    minutes: dict[int, Counter[str]] = {}  # bucketed again once the span is known
    subjects: dict[str, Subject] = {}
    networks: dict[str, Carrier] = {}
    clients: dict[str, Carrier] = {}
    for _, record in records_of(trails, malformed):
        when = _when(record)
        if cutoff is not None and (when is None or when < cutoff):
            continue
        count = repeats(record)
        action = str(record.get("action", "?"))
        report.records += 1
        report.decisions += count
        report.by_action[action] += count
        if isinstance(record.get("dropped"), int):
            report.dropped += record["dropped"]
        if when is not None:
            report.first = when if report.first is None else min(report.first, when)
            report.last = when if report.last is None else max(report.last, when)
            minutes.setdefault(int(when // 60), Counter())[action] += count
        score = record.get("score")
        if _number(score):
            index = min(SCORE_BINS - 1, max(0, int(score * SCORE_BINS / 100)))
            report.scores[index][action] += count
        _tally(record, action, count, subjects, networks, clients)
    report.malformed = len(malformed)
    if report.first is not None and report.last is not None:
        report.step = step_for(report.last - report.first)
        for minute, counts in minutes.items():
            start = minute * 60 // report.step * report.step  # every step is whole minutes
            report.timeline.setdefault(start, Counter()).update(counts)
    every = list(subjects.values())
    report.subjects = sorted(every, key=lambda s: (-_refused(s), -s.decisions, s.name))[:top]
    report.spenders = sorted(
        (s for s in every if s.tokens_used), key=lambda s: (-s.tokens_used, s.name)
    )[:top]
    report.networks = _carrying(networks, top)
    report.clients = _carrying(clients, top)
    return report


def step_for(span: float) -> int:
    """The bucket width that draws ``span`` seconds in at most MAX_BUCKETS bars."""
    for step in STEPS:
        if span / step < MAX_BUCKETS:
            return step
    return STEPS[-1]


def _tally(
    record: dict[str, Any],
    action: str,
    count: int,
    subjects: dict[str, Subject],
    networks: dict[str, Carrier],
    clients: dict[str, Carrier],
) -> None:
    member = record.get("subject")
    if not isinstance(member, dict):
        return
    kind = next((k for k in ("account", "api_key", "ip") if member.get(k)), None)
    if kind is None:
        return
    name = str(member[kind])
    subject = subjects.get(name)
    if subject is None:
        subject = subjects[name] = Subject(name, kind)
    subject.decisions += count
    subject.actions[action] += count
    score = record.get("score")
    if _number(score):
        subject.max_score = max(subject.max_score, float(score))
    signals = record.get("signals")
    if isinstance(signals, dict):
        for signal, points in signals.items():
            if _number(points):
                subject.signals[str(signal)] = subject.signals.get(str(signal), 0.0) + points
                subject.signal_records[str(signal)] += 1
    tokens = record.get("tokens")
    if isinstance(tokens, dict):
        if _number(tokens.get("used")):
            subject.tokens_used += int(tokens["used"])
        if _number(tokens.get("reserved")):
            subject.tokens_reserved += int(tokens["reserved"])
    subnet = member.get("subnet")
    if subnet:
        subject.networks.add(str(subnet))
        _carry(networks, str(subnet), name, action, count)
    client = record.get("client")
    if isinstance(client, str) and client:
        subject.clients.add(client)
        _carry(clients, client, name, action, count)


def _carry(carriers: dict[str, Carrier], key: str, who: str, action: str, count: int) -> None:
    carrier = carriers.get(key)
    if carrier is None:
        carrier = carriers[key] = Carrier(key)
    carrier.accounts.add(who)
    carrier.decisions += count
    carrier.actions[action] += count


def _carrying(carriers: dict[str, Carrier], top: int) -> list[Carrier]:
    # Many accounts through one network or build is the farm's mark; one is everybody's.
    return sorted(carriers.values(), key=lambda c: (-len(c.accounts), -c.decisions, c.name))[:top]


def _refused(subject: Subject) -> int:
    return subject.decisions - subject.actions["allow"] - subject.actions["challenge_passed"]


def _when(record: dict[str, Any]) -> float | None:
    try:
        return parse_ts(str(record["ts"]))
    except (KeyError, ValueError):
        return None


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
