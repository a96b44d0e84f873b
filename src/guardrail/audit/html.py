"""The audit report as one HTML page: inline CSS and SVG, no script, nothing fetched.

Subjects, networks, client builds and signal names come from the trail, and the trail from
clients: every one is escaped (:func:`guardrail.audit.charts.esc`) where it is written, never
trusted to be a plain name.
"""

from __future__ import annotations

import time

from guardrail.audit import charts
from guardrail.audit.charts import esc
from guardrail.audit.report import Carrier, Report, Subject

_STEP_NAMES = {60: "minute", 3600: "hour", 86400: "day", 7 * 86400: "week"}
_LISTED = 5  # accounts named per network or build; the rest are counted

_CSS = """
:root{--ink:#1d2329;--muted:#5b6670;--rule:#d9dee3;--bar:#3b6ea5;--track:#eef1f4}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--ink);background:#f6f7f9}
main{max-width:1080px;margin:0 auto;padding:24px 28px 40px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 4px}
p.lead,p.note,footer{color:var(--muted);margin:0 0 10px}
.cards{display:flex;flex-wrap:wrap;gap:8px;margin:16px 0 0;padding:0;list-style:none}
.cards li{border:1px solid var(--rule);border-radius:6px;padding:6px 12px;min-width:112px}
.cards .total{background:#f1f4f7}
.cards b{display:block;font-size:19px;font-variant-numeric:tabular-nums}
.cards svg{vertical-align:-2px;margin-right:5px}
.warn{background:#fff4e5;border:1px solid #e69f00;padding:6px 10px;border-radius:6px}
svg.defs{position:absolute}
svg.chart{width:100%;height:auto;display:block}
.chart .grid{stroke:#e3e7eb}.chart .axis{stroke:#444}
.chart .tick{font-size:11px;fill:var(--muted)}.chart .axis-title{font-size:12px;fill:var(--ink)}
.legend{display:flex;flex-wrap:wrap;gap:4px 16px;list-style:none;padding:0;margin:6px 0 4px}
.legend svg{vertical-align:-3px;margin-right:5px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--rule);vertical-align:top}
th{font-weight:600;font-size:12px;color:var(--muted);border-bottom:2px solid var(--rule)}
td.n,th.n{text-align:right}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all}
.kind{color:var(--muted);font-size:11px;margin-left:4px}
.hbar .track{fill:var(--track)}.hbar .bar{fill:var(--bar)}
.sigs{display:grid;grid-template-columns:max-content 36px max-content;gap:1px 6px;
align-items:center}.sig{display:contents}
td.name{white-space:nowrap}td.seen{font-size:12px;color:var(--muted)}
details{margin-top:6px;color:var(--muted)}
"""


def render(report: Report) -> str:
    """The whole page."""
    actions = charts.ordered(report.actions)
    body = [
        charts.defs(actions),
        _header(report, actions),
        _timeline(report, actions),
        _scores(report, actions),
        _subjects(report.subjects, actions),
        _carriers("Networks carrying the most accounts", "network", report.networks, actions),
        _carriers(
            "Client builds carrying the most accounts", "client build", report.clients, actions
        ),
        _spend(report.spenders),
        _footer(report),
    ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        # Nothing on the page may load from anywhere: a report can be opened offline, and a
        # hostile string that escaped would still have nowhere to send anything.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<title>guardrail audit report: {esc(_window(report))}</title>"
        f"<style>{_CSS}</style></head><body><main>{''.join(body)}</main></body></html>\n"
    )


def _header(report: Report, actions: list[str]) -> str:
    lead = (
        f"{_window(report)} · {report.records:,} records standing for "
        f"{report.decisions:,} decisions · {len(report.files)} source(s)"
    )
    warnings = []
    if report.dropped:
        warnings.append(f"{report.dropped:,} record(s) reported lost by the writer")
    if report.malformed:
        warnings.append(f"{report.malformed:,} line(s) that are not audit records were skipped")
    cards = f'<li class="total">all decisions<b>{report.decisions:,}</b></li>' + "".join(
        f'<li><svg width="12" height="12" aria-hidden="true"><rect width="12" height="12" '
        f'fill="{charts.fill(actions, action)}"/></svg>{esc(action)}'
        f"<b>{report.by_action[action]:,}</b></li>"
        for action in actions
    )
    return (
        f'<header><h1>guardrail audit report</h1><p class="lead">{esc(lead)}</p>'
        + "".join(f'<p class="warn">{esc(text)}</p>' for text in warnings)
        + f'<ul class="cards" aria-label="decisions by action">{cards}</ul></header>'
    )


def _timeline(report: Report, actions: list[str]) -> str:
    title = "Decisions over time, by action"
    if not report.timeline:
        return f"<section><h2>{title}</h2><p class=note>No dated records.</p></section>"
    starts = range(min(report.timeline), max(report.timeline) + 1, report.step)
    fmt = "%Y-%m-%d" if report.step >= 86400 else "%m-%d %H:%M"
    labels = [time.strftime(fmt, time.gmtime(start)) for start in starts]
    stacks = [dict(report.timeline.get(start, {})) for start in starts]
    unit = _step_name(report.step)
    chart = charts.stacked_bars(
        title,
        labels,
        stacks,
        actions,
        x_title="time (UTC), one bar per " + unit,
        y_title="decisions per " + unit,
        every=max(1, len(labels) // 10),
    )
    return (
        f"<section><h2>{title}</h2><p class=note>Every decision recorded (a plain allow is "
        f"recorded only as audit.sample_allowed says); a bar per {unit}.</p>"
        f"{charts.legend(actions)}{chart}</section>"
    )


def _scores(report: Report, actions: list[str]) -> str:
    title = "Risk score distribution, by action"
    stacks = [dict(counts) for counts in report.scores]
    chart = charts.histogram(
        title, stacks, actions, x_title="risk score (0-100)", y_title="decisions"
    )
    return (
        f"<section><h2>{title}</h2><p class=note>The score of each recorded decision, in "
        "bins of 5 points: where the actions change is where the policy's thresholds "
        f"cut.</p>{chart}</section>"
    )


def _subjects(subjects: list[Subject], actions: list[str]) -> str:
    title = "Subjects refused most, and why"
    if not subjects:
        return f"<section><h2>{title}</h2><p class=note>No subjects.</p></section>"
    top = max(subject.decisions for subject in subjects)
    strongest = max((p for s in subjects for _, p in s.top_signals(1)), default=0.0)
    rows = []
    for subject in subjects:
        signals = "".join(
            f'<span class="sig"><code>{esc(name)}</code>'
            f"{charts.hbar(points, strongest, label=f'{points:.1f} points', width=36)}"
            f"<span>{points:.1f}</span></span>"
            for name, points in subject.top_signals(3)
        )
        rows.append(
            f'<tr><td class="name"><code>{esc(subject.name)}</code><span class="kind">'
            f'{esc(subject.kind)}</span></td><td class="n">{subject.decisions:,}</td>'
            f"<td>{charts.hstack(dict(subject.actions), top, actions)}</td>"
            f'<td class="n">{subject.max_score:.1f}</td>'
            f'<td><div class="sigs">{signals or "-"}</div></td>'
            f'<td class="n">{len(subject.networks)}</td><td class="n">{len(subject.clients)}'
            "</td></tr>"
        )
    return (
        f"<section><h2>{title}</h2><p class=note>By refusals (decisions other than allow and "
        "challenge passed); signals are the largest contributions, in mean points per "
        "decision.</p><table><thead><tr><th>subject</th><th class=n>decisions</th>"
        "<th>by action (legend as above)</th><th class=n>max score</th><th>top signals</th>"
        "<th class=n>networks</th><th class=n>builds</th></tr></thead><tbody>"
        f"{''.join(rows)}</tbody></table></section>"
    )


def _carriers(title: str, what: str, carriers: list[Carrier], actions: list[str]) -> str:
    if not carriers:
        return f"<section><h2>{esc(title)}</h2><p class=note>None recorded.</p></section>"
    top = max(len(carrier.accounts) for carrier in carriers)
    rows = []
    for carrier in carriers:
        names = sorted(carrier.accounts)
        listed = ", ".join(f"<code>{esc(name)}</code>" for name in names[:_LISTED])
        if len(names) > _LISTED:
            listed += f" and {len(names) - _LISTED:,} more"
        count = len(carrier.accounts)
        rows.append(
            f'<tr><td class="name"><code>{esc(carrier.name)}</code></td>'
            f'<td class="n">{count:,}</td><td>'
            f"{charts.hbar(count, top, label=f'{count} accounts', width=90)}</td>"
            f'<td class="n">{carrier.decisions:,}</td><td class="seen">{listed}</td></tr>'
        )
    return (
        f"<section><h2>{esc(title)}</h2><p class=note>Many accounts through one {esc(what)} "
        "is how a farm looks.</p>"
        f"<table><thead><tr><th>{esc(what)}</th><th class=n>accounts</th><th></th>"
        "<th class=n>decisions</th><th>accounts seen</th></tr></thead><tbody>"
        f"{''.join(rows)}</tbody></table></section>"
    )


def _spend(spenders: list[Subject]) -> str:
    title = "Token spend by subject"
    if not spenders:
        return f"<section><h2>{title}</h2><p class=note>No token use recorded.</p></section>"
    top = max(subject.tokens_used for subject in spenders)
    rows = "".join(
        f'<tr><td><code>{esc(s.name)}</code><span class="kind">{esc(s.kind)}</span></td>'
        f"<td>{charts.hbar(s.tokens_used, top, label=f'{s.tokens_used} tokens', width=320)}"
        f'</td><td class="n">{s.tokens_used:,}</td><td class="n">{s.tokens_reserved:,}</td></tr>'
        for s in spenders
    )
    return (
        f"<section><h2>{title}</h2><p class=note>Tokens the responses were settled to, over the "
        "recorded decisions (reserved: what was held before the model answered).</p>"
        "<table><thead><tr><th>subject</th><th>tokens used</th><th class=n>used</th>"
        f"<th class=n>reserved</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _footer(report: Report) -> str:
    files = "".join(f"<li><code>{esc(file)}</code></li>" for file in report.files)
    return (
        f"<footer><h2>Sources</h2><ul>{files}</ul><p>Generated {esc(report.generated)} by "
        "<code>guardrail audit report</code>. The page loads nothing from the network.</p>"
        "</footer>"
    )


def _window(report: Report) -> str:
    if report.first is None or report.last is None:
        return "no dated records"
    fmt = "%Y-%m-%d %H:%M"
    span = f"{time.strftime(fmt, time.gmtime(report.first))} to "
    span += f"{time.strftime(fmt, time.gmtime(report.last))} UTC"
    return span if report.since is None else f"{span} (since {report.since})"


def _step_name(step: int) -> str:
    if step in _STEP_NAMES:
        return _STEP_NAMES[step]
    if step % 3600 == 0:
        return f"{step // 3600} hours"
    return f"{step // 60} minutes"
