"""``guardrail calibrate``: threshold scores proposed from an observe-mode trail.

An observe-mode trail with ``audit.sample_allowed: 1.0`` holds every decision with its score:
real traffic, without labels. Each principal (the risk engine's: account, else API key, else
address) is summed up by its *peak* score. A principal enters a band at once when a request
scores at or above the band's score; hysteresis (``margin``, ``cooldown``) only decides how long
it stays there, so who would have been mitigated depends on peak scores alone.

The lowest band is placed where at most the target share of principals reached it; the bands
above keep their place in the range between it and 100 that the policy (or 50/75/95) gave them.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from guardrail.audit.reader import Location, printable, records_of, repeats
from guardrail.audit.record import format_ts, parse_ts
from guardrail.errors import AuditError
from guardrail.identity import Subject
from guardrail.policy import Policy
from guardrail.signals.engine import principal_of

DEFAULT_TARGET = 0.003
MAX_TARGET = 0.5
#: The bands proposed without ``--policy``: the example policy's.
DEFAULT_BANDS: tuple[tuple[float, str, str | None], ...] = (
    (50.0, "throttle", "slow"),
    (75.0, "challenge", None),
    (95.0, "block", None),
)
PERCENTILES = (50.0, 90.0, 99.0, 99.5, 99.7, 99.9, 100.0)
_TOP_SIGNALS = 3


def parse_target(text: str) -> float:
    """``"0.3%"`` or ``"0.003"`` as a share; ``ValueError`` outside (0, 50%]."""
    raw = text.strip()
    try:
        share = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"--target {text!r}: expected a share such as 0.3% or 0.003") from None
    if not 0 < share <= MAX_TARGET or math.isnan(share):
        raise ValueError(
            f"--target {text!r}: the share of principals mitigated must be above 0 and at most "
            f"50% (0.5)"
        )
    return share


@dataclass(slots=True)
class Principal:
    """One principal's trail: its peak and what it sent (time, score, decisions)."""

    name: str
    subject: dict[str, Any]
    peak: float = -1.0
    peak_signals: dict[str, float] = field(default_factory=dict)
    peak_at: str = "-"
    seen: list[tuple[float, float, int]] = field(default_factory=list)

    def add(self, when: float, score: float, signals: dict[str, float], count: int) -> None:
        self.seen.append((when, score, count))
        # the first record at the peak that shows its signals (a standing decides without them)
        if score > self.peak or (score == self.peak and signals and not self.peak_signals):
            self.peak = score
            self.peak_signals = signals
            self.peak_at = format_ts(when) if when != math.inf else "-"

    def served_before(self, score: float) -> int:
        """Decisions before the first that scored ``score`` or more."""
        served = 0
        for _, scored, count in sorted(self.seen, key=lambda item: item[0]):
            if scored >= score:
                return served
            served += count
        return served


def calibrate(
    specs: Sequence[str | os.PathLike[str]],
    target: float = DEFAULT_TARGET,
    policy: Policy | None = None,
    *,
    allow_enforce: bool = False,
) -> dict[str, Any]:
    """The proposal for the trails ``specs`` (files, globs, Redis stream URIs) as a dict."""
    from guardrail.audit.sources import sources

    if not 0 < target <= MAX_TARGET:
        raise ValueError(f"target {target!r}: must be above 0 and at most 0.5")
    trails = sources(specs)
    if not trails:
        raise AuditError("no audit trail given")
    prefix = 64 if policy is None else policy.identity.client_ip.ipv6_prefix
    principals: dict[str, Principal] = {}
    malformed: list[Location] = []
    records = skipped = enforced = allowed = 0
    for _, record in records_of(trails, malformed):
        records += 1
        score = record.get("score")
        subject = record.get("subject")
        if (
            not isinstance(score, int | float)
            or isinstance(score, bool)
            or not isinstance(subject, dict)
            or not isinstance(subject.get("ip"), str)
        ):
            skipped += 1  # unmatched requests, records without a score or a subject
            continue
        enforced += record.get("mode") == "enforce"
        allowed += record.get("action") == "allow"
        name = principal_of(_subject(subject, prefix))
        principal = principals.get(name)
        if principal is None:
            principal = principals[name] = Principal(name, subject)
        try:
            when = parse_ts(str(record["ts"]))
        except (KeyError, ValueError):
            when = math.inf
        signals = record.get("signals")
        principal.add(when, float(score), _numbers(signals), repeats(record))
    names = ", ".join(trail.name for trail in trails)
    if enforced and not allow_enforce:
        raise AuditError(
            f"{names}: {enforced} scored record(s) were decided in mode enforce, where "
            "mitigations change the traffic that follows (a throttled, challenged or blocked "
            "principal sends less, a refusal adds to its score): calibrate on a trail written "
            "with mode: observe and audit.sample_allowed: 1.0, or pass --allow-enforce"
        )
    if not principals:
        raise AuditError(
            f"{names}: no scored records ({records} record(s) read): calibrate needs the "
            "decisions of routes the risk engine scores, with their subject"
        )
    peaks = sorted((p.peak for p in principals.values()), reverse=True)
    allowed_count = math.floor(target * len(peaks) + 1e-9)
    beyond = peaks[allowed_count] if allowed_count < len(peaks) else -1.0
    lowest = float(math.floor(beyond) + 1)
    met = lowest <= 100.0
    lowest = min(lowest, 100.0)
    current = (
        DEFAULT_BANDS
        if policy is None or not policy.thresholds
        else tuple((t.score, t.action, t.tier) for t in policy.thresholds)
    )
    bands = _spread(lowest, [score for score, _, _ in current])
    proposed: list[dict[str, Any]] = [
        {"score": score, "action": action, "tier": tier}
        for score, (_, action, tier) in zip(bands, current, strict=True)
    ]
    total = len(peaks)
    band_rows = []
    for index, band in enumerate(proposed):
        reached = sum(1 for peak in peaks if peak >= band["score"])
        row: dict[str, Any] = {**band, "principals": reached, "share": reached / total}
        if policy is not None and policy.thresholds:
            was = current[index][0]
            now = sum(1 for peak in peaks if peak >= was)
            row["current"] = {"score": was, "principals": now, "share": now / total}
        band_rows.append(row)
    mitigated = sorted(
        (p for p in principals.values() if p.peak >= lowest),
        key=lambda p: (-p.peak, p.name),
    )
    notes = []
    if allowed_count == 0:
        notes.append(
            f"{total} principal(s): a target of {target:.2%} allows none to be mitigated, so "
            "the lowest band sits above every peak; calibrate on more traffic"
        )
    if not met:
        notes.append(
            f"the target cannot be met: {sum(1 for p in peaks if p >= 100.0)} principal(s) "
            "peaked at 100, the top of the scale; look at them before trusting this trail"
        )
    if not allowed:
        notes.append(
            "no plain allows in the trail: with audit.sample_allowed below 1.0 the principals "
            "never mitigated are missing, and every share here is too high"
        )
    if enforced:
        notes.append(f"{enforced} record(s) decided in mode enforce (--allow-enforce)")
    margin = 10.0 if policy is None else policy.hysteresis.margin
    cooldown = 900.0 if policy is None else policy.hysteresis.cooldown
    return {
        "trails": [trail.name for trail in trails],
        "records": records,
        "skipped": skipped,
        "malformed": [str(location) for location in malformed],
        "principals": total,
        "target": target,
        "allowed": allowed_count,
        "met": met,
        "hysteresis": {"margin": margin, "cooldown": cooldown},
        "peaks": {_label(q): _percentile(peaks, q) for q in PERCENTILES},
        "bands": band_rows,
        "mitigated": [_row(p, proposed) for p in mitigated],
        "yaml": thresholds_yaml(proposed),
        "notes": notes,
    }


def thresholds_yaml(bands: Sequence[dict[str, Any]]) -> str:
    """The ``thresholds:`` lines to paste into a policy."""
    lines = ["thresholds:"]
    for band in bands:
        tier = f", tier: {band['tier']}" if band.get("tier") else ""
        lines.append(f"  - {{score: {band['score']:g}, action: {band['action']}{tier}}}")
    return "\n".join(lines)


def render(data: dict[str, Any]) -> str:
    """The proposal for a terminal."""
    total = data["principals"]
    lines = [
        f"calibrate: {total} principal(s) in {data['records']} record(s) "
        f"({data['skipped']} without a score or subject skipped; "
        f"{len(data['trails'])} trail(s))",
        f"target: at most {data['target']:.2%} of principals mitigated ({data['allowed']} of "
        f"{total})",
    ]
    if data["malformed"]:
        lines.append(
            f"!! {len(data['malformed'])} line(s) not audit records, first at "
            f"{data['malformed'][0]}"
        )
    lines += ["", "peak score per principal"]
    lines.append("  " + "  ".join(f"{name}={value:g}" for name, value in data["peaks"].items()))
    lines += ["", "proposed bands"]
    for band in data["bands"]:
        text = (
            f"  {band['action']:<10}{band['score']:>6g}   {band['principals']:>6} "
            f"principal(s) ({band['share']:.2%})"
        )
        if "current" in band:
            was = band["current"]
            text += f"   now {was['score']:g}: {was['principals']} ({was['share']:.2%})"
        lines.append(text)
    hysteresis = data["hysteresis"]
    lines.append(
        f"  (hysteresis margin {hysteresis['margin']:g}, cooldown {hysteresis['cooldown']:g}s: "
        "how long a principal stays in a band, not whether it enters)"
    )
    lines += ["", "would have been mitigated (peak score, band, top signals at the peak)"]
    for row in data["mitigated"]:
        top = " ".join(f"{name}={value:g}" for name, value in row["top_signals"].items())
        lines.append(
            f"  {row['principal']:<28}{row['peak']:>6g}  {row['band']:<10}"
            f"{row['requests']:>6} req, {row['served_before']} before  {top or '-'}"
        )
    if not data["mitigated"]:
        lines.append("  (none)")
    for note in data["notes"]:
        lines.append(f"note: {note}")
    lines += ["", "paste into the policy:"]
    # subject values are the client's; the YAML is ours
    return "\n".join(printable(line) for line in lines) + "\n" + str(data["yaml"])


def _spread(lowest: float, current: Sequence[float]) -> list[float]:
    """Whole scores from ``lowest``: each band above keeps its share of the way to 100."""
    if not current:
        return []
    base = current[0]
    out = [lowest]
    for score in current[1:]:
        room = 100.0 - base
        placed = lowest + (score - base) * (100.0 - lowest) / room if room > 0 else lowest
        out.append(min(100.0, max(float(math.ceil(placed)), out[-1] + 1)))
    return out


def _row(principal: Principal, bands: Sequence[dict[str, Any]]) -> dict[str, Any]:
    band = [b for b in bands if principal.peak >= b["score"]][-1]
    top = dict(sorted(principal.peak_signals.items(), key=lambda kv: (-kv[1], kv[0])))
    return {
        "principal": principal.name,
        "subject": principal.subject,
        "peak": principal.peak,
        "peak_at": principal.peak_at,
        "band": band["action"],
        "requests": sum(count for _, _, count in principal.seen),
        "served_before": principal.served_before(bands[0]["score"]),
        "top_signals": dict(list(top.items())[:_TOP_SIGNALS]),
    }


def _subject(members: dict[str, Any], ipv6_prefix: int) -> Subject:
    """The record's subject as the engine saw it: a keyless IPv6 client is its network."""
    ip = str(members["ip"])
    key = None
    if ":" in ip and ipv6_prefix < 128:
        try:
            address = ipaddress.IPv6Address(ip)
        except ValueError:
            address = None
        if address is not None and address.ipv4_mapped is None:
            network = ipaddress.IPv6Network((address, ipv6_prefix), strict=False)
            key = f"{network.network_address}/{ipv6_prefix}"
    account = members.get("account")
    api_key = members.get("api_key")
    return Subject(
        api_key=api_key if isinstance(api_key, str) else None,
        account=account if isinstance(account, str) else None,
        ip=ip,
        subnet=str(members.get("subnet", "")),
        ip_key=key,
    )


def _numbers(signals: object) -> dict[str, float]:
    if not isinstance(signals, dict):
        return {}
    return {
        str(name): float(value)
        for name, value in signals.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _percentile(ordered_desc: Sequence[float], q: float) -> float:
    """Nearest rank over peaks sorted high to low."""
    rank = max(1, math.ceil(q / 100 * len(ordered_desc)))
    return ordered_desc[len(ordered_desc) - rank]


def _label(q: float) -> str:
    return f"p{q:g}" if q < 100 else "max"
