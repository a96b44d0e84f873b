"""Signals across identities: a cohort (a subnet, a client fingerprint) is suspicious when it
is crowded *and* its members act alike, never for being crowded alone.

A university NAT holds a hundred accounts on one /24, each a person on one network: crowded,
not coordinated. A farm's /24 holds a hundred accounts that all tick like scripts and send the
same templates: its members' mean behaviour score is high. A residential proxy pool's subnets
hold many accounts that each hop across many subnets: the *wander* of its traffic is high.
Reading the cohort's state on every member's request is what raises the members together:
an account new to a coordinated subnet carries the cohort's evidence from its first request.
"""

from __future__ import annotations

from guardrail.signals import sketch
from guardrail.signals.behaviour import confidence, ramp
from guardrail.signals.state import C_BEH, C_REQ, C_WAN, COHORT_BITS

__all__ = ["affinity", "behaviour_score", "fingerprint_cohort", "subnet_cohort"]


def behaviour_score(points: float) -> float:
    """A member's contribution to its cohorts' coordination: its own-behaviour points scaled
    so that 60 (three strong signals) is 1."""
    return min(points / 60.0, 1.0)


def subnet_cohort(c: list[float], members: int) -> float:
    """``c``: the subnet's COHORT counters, this request included; ``members``: its bitmap."""
    requests = c[C_REQ]
    if requests <= 0 or members & (members - 1) == 0:  # fewer than two accounts
        return 0.0
    alike, wander = c[C_BEH] / requests, c[C_WAN] / requests
    if alike <= 0.25 and wander <= 0.1:  # every ramp below is 0: the usual subnet
        return 0.0
    accounts = sketch.distinct(members, COHORT_BITS)
    # A crowd of twenty acting alike, or a handful of accounts that each hop across many
    # subnets and keep meeting on this one: a family or a NAT does neither.
    acting_alike = ramp(accounts, 4.0, 20.0) * ramp(alike, 0.25, 0.5)
    hopping = ramp(accounts, 1.5, 4.0) * ramp(wander, 0.1, 0.4)
    return max(acting_alike, hopping) * confidence(requests, 20)


def fingerprint_cohort(c: list[float], members: int) -> float:
    # An SDK's default user agent is shared by every honest user of that SDK, so a crowd is
    # expected here; only a crowd that also acts alike, or whose traffic hops across subnets
    # (one client build driven through a proxy pool), counts.
    requests = c[C_REQ]
    if requests <= 0 or members.bit_count() < 8:  # fewer than 8 accounts: no crowd
        return 0.0
    alike, wander = c[C_BEH] / requests, c[C_WAN] / requests
    if alike <= 0.3 and wander <= 0.15:
        return 0.0
    crowd = ramp(sketch.distinct(members, COHORT_BITS), 8.0, 30.0)
    acting_alike = ramp(alike, 0.3, 0.55)
    hopping = ramp(wander, 0.15, 0.5)
    return crowd * max(acting_alike, hopping) * confidence(requests, 30)


def affinity(c: list[float], manner: float, spread: float) -> float:
    """How much of a fingerprint cohort's evidence (``c``: its COHORT counters) a member
    carries: all of it when the build is the campaign's own, else as much as the member shows
    of what made the cohort suspect, its own hopping across networks (``spread``, its
    ``network_spread``) or its own manner (``manner``, its behaviour score).

    A client build is shared by strangers: the most common SDK and browser releases have
    thousands of honest users, and a campaign that drives them makes their cohort suspect for
    everyone on it. A member that neither hops nor acts like a script inherits nothing from
    such a cohort; a farm's members do both. A build whose traffic is nearly all coordinated
    (a mean behaviour score from 0.6, in full from 0.75) is the campaign's own, a rare build,
    and a newcomer on it carries its evidence from its first request. (A subnet is a small
    network, specific by nature: its cohort's evidence reaches every member.) A manner counts
    from half a full behaviour score: a reasoning habit alone is a third.
    """
    requests = c[C_REQ]
    own_build = ramp(c[C_BEH] / requests, 0.6, 0.75) if requests > 0 else 0.0
    return max(own_build, spread, ramp(manner, 0.5, 0.75))
