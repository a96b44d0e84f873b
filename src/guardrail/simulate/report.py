"""What a simulation measured, per population: what was served, limited, throttled, challenged
and blocked; how many accounts were mitigated; for campaigns, how much got through first.

"Mitigated" means guardrail decided throttle, challenge or block for the account at least
once; a rate limit (429) alone is not mitigation and is counted apart. The JSON report has
the same numbers as the table, under keys that do not change from run to run.
"""

from __future__ import annotations

import math
import statistics
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from guardrail.simulate.traffic import SimRequest

BENIGN_ALL = "benign (all groups)"
CAMPAIGNS_ALL = "campaigns (all)"
NOTES = (
    "accts = accounts that sent at least one request in the window (shares are of these)",
    "served counts every 2xx answer, throttled (slowed) ones included",
    "mitigated = at least one throttle, challenge or block decision; 429s alone are not",
    "served before 1st mitigation: accounts never mitigated count their whole served total",
    "recall = share of a campaign's accounts mitigated at least once",
    "why mitigated: per signal, the accounts whose first mitigation had it in its top 3",
)
#: How many of a first mitigation's signals, largest points first, count as its reasons.
WHY_TOP = 3


@dataclass(slots=True)
class _Account:
    first_seen: float
    requests: int = 0
    served: int = 0
    limited: int = 0
    challenged: int = 0
    blocked: int = 0
    errors: int = 0
    throttled: int = 0
    mitigated: int = 0
    served_before: int = 0  # served before the first mitigation (all of them, if none)
    served_after: int = 0  # served from the first mitigation on
    first_mitigated: float | None = None
    why: tuple[str, ...] = ()  # the top signals of the first mitigation, largest first


@dataclass(slots=True)
class _Group:
    kind: str
    size: int  # accounts the population has, active or not
    accounts: dict[str, _Account] = field(default_factory=dict)
    signal_points: dict[str, float] = field(default_factory=dict)
    delay: float = 0.0


class Tally:
    """Accumulates one observation per request; ``report`` turns it into numbers."""

    def __init__(self, populations: list[tuple[str, str, int]]) -> None:
        """``populations``: (name, kind, accounts) in report order; kind benign or campaign."""
        self.groups = {name: _Group(kind, size) for name, kind, size in populations}
        self.app_errors = 0
        self.first_app_error: str | None = None

    def add(
        self,
        request: SimRequest,
        outcome: str,
        mitigation: str | None,
        signals: dict[str, float] | None,
        delay: float,
    ) -> None:
        """One request's fate: ``outcome`` as the client saw it (served, limited, challenged,
        blocked, error), the ``mitigation`` guardrail decided (throttle, challenge, block or
        None), the decision's signal points and the delay it asked for."""
        group = self.groups[request.population]
        account = group.accounts.get(request.account)
        if account is None:
            account = group.accounts[request.account] = _Account(request.t)
        account.requests += 1
        group.delay += delay
        if mitigation is not None:
            account.mitigated += 1
            if account.first_mitigated is None:
                account.first_mitigated = request.t
            if not account.why:  # a decision from standing has no breakdown: the next one
                account.why = top_signals(signals or {})
            points = group.signal_points
            for name, value in (signals or {}).items():
                points[name] = points.get(name, 0.0) + value
        if outcome == "served":
            account.served += 1
            if mitigation == "throttle":
                account.throttled += 1
            if account.first_mitigated is None:
                account.served_before += 1
            else:
                account.served_after += 1
        elif outcome == "limited":
            account.limited += 1
        elif outcome == "challenged":
            account.challenged += 1
        elif outcome == "blocked":
            account.blocked += 1
        else:
            account.errors += 1

    def app_error(self, exc: BaseException) -> None:
        self.app_errors += 1
        if self.first_app_error is None:
            self.first_app_error = f"{type(exc).__name__}: {exc}"


def top_signals(signals: dict[str, float], count: int = WHY_TOP) -> tuple[str, ...]:
    """The ``count`` signals that gave a decision the most points (ties by name)."""
    ranked = sorted((kv for kv in signals.items() if kv[1] > 0), key=lambda kv: (-kv[1], kv[0]))
    return tuple(name for name, _ in ranked[:count])


def _why(accounts: list[_Account]) -> list[dict[str, Any]]:
    """Per signal, how many mitigated accounts had it among their first mitigation's top."""
    counts: dict[str, int] = {}
    for account in accounts:
        for name in account.why:
            counts[name] = counts.get(name, 0) + 1
    return [
        {"name": name, "accounts": n}
        for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _percentile(values: list[int] | list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(q * len(ordered)) - 1)])


def _row(name: str, kind: str, groups: list[_Group]) -> dict[str, Any]:
    accounts = [a for g in groups for a in g.accounts.values()]
    totals = {
        key: sum(getattr(a, key) for a in accounts)
        for key in ("requests", "served", "limited", "throttled", "challenged", "blocked")
    }
    mitigated = [a for a in accounts if a.first_mitigated is not None]
    mitigated_requests = sum(a.mitigated for a in accounts)
    points: dict[str, float] = {}
    for group in groups:
        for signal, value in group.signal_points.items():
            points[signal] = points.get(signal, 0.0) + value
    top = sorted(points.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    campaign = kind == "campaign"
    before = [a.served_before for a in accounts]
    delays = [a.first_mitigated - a.first_seen for a in mitigated if a.first_mitigated is not None]
    return {
        "population": name,
        "kind": kind,
        "accounts": sum(g.size for g in groups),
        "active_accounts": len(accounts),
        **totals,
        "errors": sum(a.errors for a in accounts),
        "accounts_limited": sum(1 for a in accounts if a.limited),
        "accounts_mitigated": len(mitigated),
        "accounts_mitigated_share": _share(len(mitigated), len(accounts)),
        "requests_mitigated": mitigated_requests,
        "requests_mitigated_share": _share(mitigated_requests, totals["requests"]),
        "served_share": _share(totals["served"], totals["requests"]),
        "delay_seconds": round(sum(g.delay for g in groups), 1),
        "recall": _share(len(mitigated), len(accounts)) if campaign else None,
        "served_before_first_mitigation": (
            {
                "median": float(statistics.median(before)),
                "p90": _percentile(before, 0.9),
                "never_mitigated_accounts": len(accounts) - len(mitigated),
            }
            if campaign and before
            else None
        ),
        "served_after_mitigation": sum(a.served_after for a in accounts),
        "time_to_first_mitigation_seconds": (
            {
                "median": round(statistics.median(delays), 1),
                "p90": round(_percentile(delays, 0.9), 1),
            }
            if delays
            else None
        ),
        "why_mitigated": _why(mitigated),
        "top_signals": [
            {"name": signal, "mean_points": round(value / mitigated_requests, 2)}
            for signal, value in top
            if mitigated_requests
        ],
    }


def report(tally: Tally, run: dict[str, Any]) -> dict[str, Any]:
    """The JSON report: ``run`` (what was simulated, how long it took), one row per population,
    and totals over benign groups and over campaigns."""
    rows = [_row(name, group.kind, [group]) for name, group in tally.groups.items()]
    benign = [g for g in tally.groups.values() if g.kind == "benign"]
    campaigns = [g for g in tally.groups.values() if g.kind == "campaign"]
    totals = {
        "benign": _row(BENIGN_ALL, "benign", benign),
        "campaigns": _row(CAMPAIGNS_ALL, "campaign", campaigns),
    }
    return {
        "run": {
            **run,
            "app_errors": tally.app_errors,
            "first_app_error": tally.first_app_error,
        },
        "populations": rows,
        "totals": totals,
        "summary": _summary(rows, totals["benign"]),
        "notes": list(NOTES),
    }


def _summary(rows: list[dict[str, Any]], benign: dict[str, Any]) -> dict[str, Any]:
    """The headline figures: honest accounts mitigated, and per campaign its recall and the
    median requests served before its accounts' first mitigation."""
    return {
        "honest_accounts_mitigated": benign["accounts_mitigated"],
        "honest_accounts": benign["active_accounts"],
        "honest_accounts_mitigated_share": benign["accounts_mitigated_share"],
        "campaigns": {
            row["population"]: {
                "recall": row["recall"],
                "median_served_before_first_mitigation": (
                    row["served_before_first_mitigation"] or {}
                ).get("median"),
            }
            for row in rows
            if row["kind"] == "campaign"
        },
    }


# --- the table ----------------------------------------------------------------------------------

_NAME = 22


def _count_share(count: int, share: float) -> str:
    return f"{count} ({share * 100:.1f}%)"


def _counts_line(row: dict[str, Any]) -> str:
    return (
        f"  {row['population']:<{_NAME}}{row['active_accounts']:>6}{row['requests']:>9}"
        f"{row['served']:>9}{row['limited']:>8}{row['throttled']:>10}{row['challenged']:>11}"
        f"{row['blocked']:>8}"
        f"{_count_share(row['accounts_mitigated'], row['accounts_mitigated_share']):>17}"
        f"{_count_share(row['requests_mitigated'], row['requests_mitigated_share']):>18}"
    )


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.1f}"


def _campaign_line(row: dict[str, Any]) -> str:
    before = row["served_before_first_mitigation"] or {}
    before_text = f"{_number(before.get('median', 0.0))} / {_number(before.get('p90', 0.0))}"
    ttm = row["time_to_first_mitigation_seconds"]
    ttm_text = f"{ttm['median'] / 60:.1f} / {ttm['p90'] / 60:.1f}" if ttm else "-"
    return (
        f"  {row['population']:<{_NAME}}{row['recall'] * 100:>7.1f}%"
        f"{row['served_share'] * 100:>8.1f}%{before_text:>30}"
        f"{row['served_after_mitigation']:>14}{ttm_text:>28}"
    )


def render(data: dict[str, Any]) -> str:
    """The report as fixed-width tables for a terminal."""
    run = data["run"]
    rows = data["populations"]
    totals = data["totals"]
    lines = [
        f"guardrail simulate (seed {run['seed']}; {run['days']:g} days from {run['start']}; "
        f"scale {run['scale']:g})",
        f"policy {run['policy']} (mode {run['mode']}); app {run['app']}; storage {run['storage']}"
        + (f" ({run['instances']} instances)" if run.get("instances", 1) > 1 else ""),
        f"{run['requests']} requests in {run['wall_seconds']:.1f} s "
        f"({run['requests_per_second']:.0f} requests/s); {run['audit_records']} audit records",
    ]
    if run["app_errors"]:
        lines.append(
            f"!! {run['app_errors']} request(s) raised in the app; first: {run['first_app_error']}"
        )
    header = (
        f"  {'population':<{_NAME}}{'accts':>6}{'requests':>9}{'served':>9}{'limited':>8}"
        f"{'throttled':>10}{'challenged':>11}{'blocked':>8}{'accts mitigated':>17}"
        f"{'reqs mitigated':>18}"
    )
    lines += ["", "by population", header]
    lines += [_counts_line(row) for row in rows if row["kind"] == "benign"]
    lines.append(_counts_line(totals["benign"]))
    lines += [_counts_line(row) for row in rows if row["kind"] == "campaign"]
    lines.append(_counts_line(totals["campaigns"]))
    lines += [
        "",
        "campaigns",
        f"  {'population':<{_NAME}}{'recall':>8}{'served':>9}{'served before 1st mitigation':>30}"
        f"{'served after':>14}{'minutes to 1st mitigation':>28}",
        f"  {'':<{_NAME}}{'':>8}{'share':>9}{'median / p90':>30}{'':>14}{'median / p90':>28}",
    ]
    for row in rows:
        if row["kind"] == "campaign":
            lines.append(_campaign_line(row))
    lines.append(_campaign_line(totals["campaigns"]))
    lines += ["", "top signals of mitigations (mean points per mitigated request)"]
    lines += _signal_lines(
        [*rows, totals["benign"], totals["campaigns"]],
        lambda row: [f"{s['name']} {s['mean_points']:.1f}" for s in row["top_signals"]],
        "  (no mitigation decided)",
    )
    lines += ["", "why honest accounts were mitigated (top signals of each first mitigation; "
              "accounts)"]  # fmt: skip
    lines += _signal_lines(
        [row for row in [*rows, totals["benign"]] if row["kind"] == "benign"],
        lambda row: [f"{s['name']} {s['accounts']}" for s in row["why_mitigated"]],
        "  (no honest account mitigated)",
    )
    summary = data["summary"]
    lines += [
        "",
        f"honest accounts mitigated: {summary['honest_accounts_mitigated']} of "
        f"{summary['honest_accounts']} ({summary['honest_accounts_mitigated_share'] * 100:.2f}%)",
    ]
    for name, figures in summary["campaigns"].items():
        median = figures["median_served_before_first_mitigation"]
        lines.append(
            f"{name}: recall {figures['recall'] * 100:.1f}%, median requests served before "
            f"first mitigation {'-' if median is None else _number(median)}"
        )
    lines += ["", "notes", *(f"  {note}" for note in data["notes"])]
    return "\n".join(lines)


def _signal_lines(
    rows: list[dict[str, Any]], items: Callable[[dict[str, Any]], list[str]], none: str
) -> list[str]:
    """One wrapped line per row with any ``items`` (its population's name, then the items),
    or ``none`` if no row has any."""
    out = []
    for row in rows:
        if shown := items(row):
            lead = f"  {row['population']:<{_NAME}}"
            out.append(
                textwrap.fill(
                    ", ".join(shown), 100, initial_indent=lead, subsequent_indent=" " * len(lead)
                )
            )
    return out or [none]
