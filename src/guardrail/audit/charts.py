"""Inline SVG for the audit report: stacked bars, a histogram, horizontal bars.

Charts are written as text, with no library and nothing fetched: the page opens offline. Each
chart is an ``<svg role="img">`` with a ``<title>`` and axis labels; every bar carries a
``<title>`` with its number, and each action has a pattern as well as a colour, so the page
reads without colour (and in print). Every label passes through :func:`esc`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

#: Okabe-Ito colours (distinguishable with the common colour-vision deficiencies) and a
#: pattern each: (colour, pattern kind).
STYLES: dict[str, tuple[str, str]] = {
    "allow": ("#8a94a0", "solid"),
    "challenge_passed": ("#009e73", "dots"),
    "throttle": ("#56b4e9", "rising"),
    "limit": ("#e69f00", "rows"),
    "challenge": ("#cc79a7", "cross"),
    "challenge_failed": ("#6a3d9a", "falling"),
    "block": ("#d55e00", "solid"),
}
OTHER = ("#5f6b77", "columns")
ORDER = tuple(STYLES)
"""Stacking order: served at the bottom, the hardest refusals on top."""

_LINES = {
    "rows": '<path d="M0 4H8" stroke="#fff" stroke-width="1.6"/>',
    "columns": '<path d="M4 0V8" stroke="#fff" stroke-width="1.6"/>',
    "rising": '<path d="M-2 10L10 -2M-2 2L2 -2M6 10L10 6" stroke="#fff" stroke-width="1.4"/>',
    "falling": '<path d="M-2 -2L10 10M-2 6L2 10M6 -2L10 2" stroke="#fff" stroke-width="1.4"/>',
    "cross": '<path d="M0 4H8M4 0V8" stroke="#fff" stroke-width="1.3"/>',
    "dots": '<circle cx="4" cy="4" r="1.5" fill="#fff"/>',
}


def esc(value: object) -> str:
    """Text or attribute value, escaped (quotes included): trail values are the client's."""
    return escape(str(value), quote=True)


def ordered(actions: Sequence[str]) -> list[str]:
    known = [action for action in ORDER if action in actions]
    return known + sorted(action for action in actions if action not in STYLES)


def fill(actions: Sequence[str], action: str) -> str:
    """The fill of ``action``'s bars: its pattern (defined once by :func:`defs`)."""
    return f"url(#act-{list(actions).index(action)})"


def defs(actions: Sequence[str]) -> str:
    """One hidden SVG defining a pattern per action; ids by position, never by name."""
    patterns = []
    for index, action in enumerate(actions):
        colour, kind = STYLES.get(action, OTHER)
        lines = _LINES.get(kind, "")
        patterns.append(
            f'<pattern id="act-{index}" width="8" height="8" patternUnits="userSpaceOnUse">'
            f'<rect width="8" height="8" fill="{colour}"/>{lines}</pattern>'
        )
    return (
        '<svg class="defs" width="0" height="0" aria-hidden="true" focusable="false">'
        f"<defs>{''.join(patterns)}</defs></svg>"
    )


def legend(actions: Sequence[str]) -> str:
    items = "".join(
        f'<li><svg width="18" height="14" aria-hidden="true"><rect width="18" height="14" '
        f'fill="{fill(actions, action)}" stroke="#333" stroke-width=".5"/></svg>{esc(action)}</li>'
        for action in actions
    )
    return f'<ul class="legend" aria-label="legend">{items}</ul>'


def nice_max(value: float) -> float:
    """The axis top, at least ``value``: a number whose quarters (the grid lines) are round."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return float(next(m * power for m in (1, 2, 4, 5, 6, 8, 10) if m * power >= value))


W, H = 960, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 56


def stacked_bars(
    title: str,
    labels: Sequence[str],
    stacks: Sequence[dict[str, int]],
    actions: Sequence[str],
    *,
    x_title: str,
    y_title: str,
    every: int = 1,
) -> str:
    """Vertical bars, each a stack of counts by action; every ``every``-th bar labelled (none
    when 0)."""
    top = nice_max(max((sum(stack.values()) for stack in stacks), default=0))
    width = (W - LEFT - RIGHT) / max(1, len(stacks))
    plot = H - TOP - BOTTOM
    parts = [_open(title), *_y_axis(top, y_title)]
    for index, (label, stack) in enumerate(zip(labels, stacks, strict=True)):
        x = LEFT + index * width
        y = float(TOP + plot)
        for action in actions:
            count = stack.get(action, 0)
            if not count:
                continue
            height = count / top * plot
            y -= height
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(1.0, width - 2):.1f}" '
                f'height="{height:.1f}" fill="{fill(actions, action)}">'
                f"<title>{esc(label)}: {esc(action)} {count:,}</title></rect>"
            )
        if every and index % every == 0:
            parts.append(
                f'<text class="tick" x="{x + width / 2:.1f}" y="{TOP + plot + 16}" '
                f'text-anchor="middle">{esc(label)}</text>'
            )
    parts.append(_x_title(x_title))
    return "".join(parts) + "</svg>"


def histogram(
    title: str,
    stacks: Sequence[dict[str, int]],
    actions: Sequence[str],
    *,
    x_title: str,
    y_title: str,
) -> str:
    """Bins of equal width over 0-100, each a stack by action; an edge label every second
    bin."""
    step = 100 / len(stacks)
    labels = [f"score {index * step:g} to {(index + 1) * step:g}" for index in range(len(stacks))]
    chart = stacked_bars(title, labels, stacks, actions, x_title=x_title, y_title=y_title, every=0)
    width = (W - LEFT - RIGHT) / len(stacks)
    ticks = "".join(
        f'<text class="tick" x="{LEFT + index * width:.1f}" y="{H - BOTTOM + 16}" '
        f'text-anchor="middle">{index * step:g}</text>'
        for index in range(0, len(stacks) + 1, 2)
    )
    return chart.removesuffix("</svg>") + ticks + "</svg>"


def hbar(value: float, top: float, *, label: str, width: int = 160) -> str:
    """One horizontal bar in a table cell (the number is written beside it)."""
    length = 0.0 if top <= 0 else max(1.0, value / top * width)
    return (
        f'<svg class="hbar" width="{width}" height="12" role="img" aria-label="{esc(label)}">'
        f'<rect width="{width}" height="12" class="track"/>'
        f'<rect width="{length:.1f}" height="12" class="bar"/></svg>'
    )


def hstack(counts: dict[str, int], top: float, actions: Sequence[str], width: int = 180) -> str:
    """A horizontal bar split by action, in the same patterns as the charts."""
    parts = []
    x = 0.0
    for action in actions:
        count = counts.get(action, 0)
        if not count or top <= 0:
            continue
        length = count / top * width
        parts.append(
            f'<rect x="{x:.1f}" width="{max(1.0, length):.1f}" height="14" '
            f'fill="{fill(actions, action)}"><title>{esc(action)} {count:,}</title></rect>'
        )
        x += length
    text = ", ".join(f"{action} {counts[action]:,}" for action in actions if counts.get(action))
    return (
        f'<svg class="hstack" width="{width}" height="14" role="img" aria-label="{esc(text)}">'
        f"{''.join(parts)}</svg>"
    )


def _open(title: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{esc(title)}">'
        f"<title>{esc(title)}</title>"
    )


def _y_axis(top: float, y_title: str) -> list[str]:
    plot = H - TOP - BOTTOM
    parts = []
    for tick in range(5):
        value = top * tick / 4
        y = TOP + plot - plot * tick / 4
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{value:,.0f}</text>"
        )
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot}"/>'
        f'<line class="axis" x1="{LEFT}" x2="{W - RIGHT}" y1="{TOP + plot}" y2="{TOP + plot}"/>'
        f'<text class="axis-title" transform="translate(16 {TOP + plot / 2}) rotate(-90)" '
        f'text-anchor="middle">{esc(y_title)}</text>'
    )
    return parts


def _x_title(text: str) -> str:
    return (
        f'<text class="axis-title" x="{LEFT + (W - LEFT - RIGHT) / 2}" y="{H - 12}" '
        f'text-anchor="middle">{esc(text)}</text>'
    )
