"""Signals of one identity's own behaviour, each a value from 0 to 1.

Every share is scaled by a confidence that grows with the evidence behind it, so a new
identity starts at 0 and two requests never make a pattern. The ramps (where a value starts
to rise and where it saturates) are set so that ordinary human variety stays at 0: people's
think times vary by more than their mean (CV > 1), they sleep, and they seldom re-ask a
near-copy of their last question.
"""

from __future__ import annotations

import math

from guardrail.signals import sketch
from guardrail.signals.state import (
    FCH,
    FRM,
    GN,
    GQ,
    GS,
    HOUR0,
    PAS,
    PRM,
    REF,
    REQ,
    RSN,
    SHP,
    SPREAD_BITS,
    TPL,
    TRS,
    XAC,
)


def ramp(value: float, start: float, full: float) -> float:
    """0 below ``start``, 1 from ``full``, linear between (``full`` may be below ``start``)."""
    x = (value - start) / (full - start)
    return 0.0 if x <= 0 else 1.0 if x >= 1 else x


def confidence(count: float, needed: float) -> float:
    return count / needed if count < needed else 1.0


# The functions below run on every request: ramps and confidences are written out in them
# (a call costs more than the arithmetic), and each returns as soon as its value is 0.


def request_volume(c: list[float], half_life: float, limit_rate: float | None) -> float:
    """Sustained rate (requests decayed over half_life, in requests per second at steady
    state) against the tightest per-identity limit of the route."""
    if not limit_rate:
        return 0.0
    rate = c[REQ] * math.log(2) / half_life
    return ramp(rate / limit_rate, 0.25, 0.75)


def timing_regularity(c: list[float]) -> float:
    """ramp(coefficient of variation of the gaps, 0.5, 0.15) * confidence(gaps, 8)."""
    n = c[GN]
    if n < 4:
        return 0.0
    mean = c[GS] / n
    if mean <= 0:
        return 0.0
    cv = math.sqrt(max(c[GQ] / n - mean * mean, 0.0)) / mean
    if cv >= 0.5:
        return 0.0
    x = 1.0 if cv <= 0.15 else (0.5 - cv) / 0.35
    return x if n >= 8 else x * n / 8


def round_the_clock(c: list[float], factors: list[float]) -> float:
    """ramp(busy hours of the day, 18, 23) * confidence(requests, 12): people sleep (and a
    fake night shows as 8 idle hours). ``factors``: ``sketch.undecay_table(half_life in
    hours)[current UTC hour]``."""
    busy = sketch.busy_hours(c[HOUR0 : HOUR0 + 24], factors)
    if busy <= 18:
        return 0.0
    x = 1.0 if busy >= 23 else (busy - 18) / 5
    n = c[REQ]
    return x if n >= 12 else x * n / 12


def share(c: list[float], part: int, whole: int, start: float, full: float, needed: float) -> float:
    """ramp(``c[part] / c[whole]``, start, full) * confidence(``c[whole]``, needed)."""
    n = c[whole]
    if n <= 0:
        return 0.0
    x = (c[part] / n - start) / (full - start)
    if x <= 0:
        return 0.0
    if x > 1:
        x = 1.0
    return x if n >= needed else x * n / needed


def prompt_templating(c: list[float]) -> float:
    return share(c, TPL, PRM, 0.2, 0.6, 6)


def reasoning_extraction(c: list[float]) -> float:
    return share(c, RSN, PRM, 0.1, 0.6, 4)


def templated_reasoning(c: list[float]) -> float:
    """Each half alone is common (a prompting habit; a batch job's fixed instruction); together
    they are what distillation sends. Counted from a quarter: a person's questions are near
    one another now and then (a follow-up in the same words, a favourite opening), so someone
    who asks for reasoning on most prompts has some of those by chance (the simulator's
    habitual askers 7 % at the median, 15 % at the 90th percentile over two days, more within
    a session of follow-ups) where a script that fills in one template has half."""
    return share(c, TRS, PRM, 0.25, 0.5, 16)


def shared_frames(c: list[float]) -> float:
    """Share of the requests for reasoning whose opening or closing words (a frame, keyed by
    the network) at least two other identities on the network sent lately: one instruction
    that a team of accounts fills in with ever new problems, the hydra's way of hiding a
    quarter of extraction in ordinary work. Nobody else's frame is a habit's: a stock phrase
    is closed by the sender's own question, and strangers on other networks never share one.
    Half of them is where it starts (an office whose people ask alike shares some: the
    simulator's NAT office at most a third, over two days), four in five are full."""
    return share(c, FRM, RSN, 0.5, 0.8, 8)


def cross_account_templates(c: list[float]) -> float:
    return share(c, XAC, PRM, 0.35, 0.75, 6)


def network_spread(subnets: int) -> float:
    """ramp(distinct subnets, 2.5, 6) over the last one or two half-lives: home, office and a
    phone make three; a proxy pool makes six and more. ``subnets``: the bitmap
    (``SPREAD_BITS``)."""
    if subnets.bit_count() < 3:  # two subnets count as about two: the usual case
        return 0.0
    return ramp(sketch.distinct(subnets, SPREAD_BITS), 2.5, 6.0)


def request_shape(c: list[float]) -> float:
    return share(c, SHP, REQ, 0.1, 0.5, 6)


def refusals(c: list[float]) -> float:
    return share(c, REF, REQ, 0.1, 0.5, 10)


def passed_challenges(c: list[float]) -> float:
    """One pass, decayed: its points (negative) take effect in full, then fade."""
    return min(c[PAS], 1.0)


def failed_challenges(c: list[float]) -> float:
    return ramp(c[FCH], 0.0, 3.0)
