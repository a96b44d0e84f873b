"""A running guardrail's view of a new policy: a shallow copy of the guardrail whose
policy-derived attributes are built anew, and whose long-lived state (storage, risk store,
challenge store, audit log, settlements, lifecycle) is the same objects.

A request reads the view once, at its start (``Guardrail.__call__``), and is decided on that
view to its end: a reload publishes a new view with one attribute write, so on one event loop
no request sees half of one policy and half of another. A view is never changed once built.

Every attribute of a Guardrail is either SHARED or REBUILT here; a test fails when one is
neither, so that a new attribute cannot silently keep the first policy's value after a reload.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from guardrail.actions.captcha import Provider, Siteverify
from guardrail.actions.clearance import ClearanceSigner
from guardrail.actions.endpoints import ChallengeDesk
from guardrail.actions.hcaptcha import HCAPTCHA
from guardrail.actions.limit import RateLimitPolicies
from guardrail.actions.tier import compile_tier
from guardrail.actions.turnstile import TURNSTILE
from guardrail.early import Bands, Refused
from guardrail.identity import IdentityResolver
from guardrail.limits import RouteTable
from guardrail.provenance.hooks import captured_routes, seeds_of, signer_of
from guardrail.secrets import resolve_secret
from guardrail.signals.engine import RiskEngine

if TYPE_CHECKING:
    from guardrail.middleware import Guardrail
    from guardrail.policy import Policy

#: The same object in every view: state that outlives a policy, and the lifecycle.
SHARED = frozenset(
    {
        "app",
        "clock",
        "sleep",
        "secret",  # restart-only (restart_only.py): every API key's hash
        "storage",
        "fallback",
        "deadlines",  # its tick comes from the first policy's inspect timeouts
        "challenges",
        "settlements",
        "audit",
        "refusals",
        "unmatched",  # reheaded on a swap: its records name the policy in force
        "request_ids",
        "_unmanaged",
        "_ready",
        "_started",
        "_storage_warned_at",
        "_reloader",
        "recorder",  # the provenance index: its settings are restart-only
        "metrics",  # the instruments: the metrics section is restart-only
        "_metrics_path",
        "_counting",
    }
)

#: Built from the new policy for each view.
REBUILT = frozenset(
    {
        "_policy",
        "_view",  # a view's is itself: its own policy is the one in force while it is
        "enforce",
        "identity",
        "routes",
        "_refuse_unmatched",
        "risk",  # a new engine (weights, thresholds, allow) over the same risk store
        "tiers",
        "refused",  # what the old limits refused: the new ones may not
        "bands",  # what the old thresholds banded: the store still holds each band
        "clearances",  # clearance.secrets may rotate: a clearance signed by a key kept still passes
        "siteverify",
        "widget",
        "_prefix",
        "desk",
        "policies",
        "sample_allowed",
        "_provenance",  # the captured routes
        "seeds",  # provenance.watermark: its key may rotate
        "signer",  # provenance.signatures: its key may rotate
    }
)


def recompiled(guard: Guardrail, current: Guardrail, policy: Policy) -> Guardrail:
    """The view of ``guard`` deciding on ``policy``; ``current`` is the view in force.
    May block (secrets read from files, ``module:attribute`` imported): run it in a thread."""
    view = copy.copy(guard)
    view._policy = policy
    view._view = view  # its own policy is the one in force while it is
    view.enforce = policy.mode == "enforce"
    view.identity = IdentityResolver(policy.identity, guard.secret)
    view.routes = RouteTable(policy.routes, policy.unmatched)
    view._refuse_unmatched = view.routes.refuse and view.enforce
    if current.risk is not None:
        old = current.risk
        view.risk = RiskEngine(policy, old.store, old.fallback, remote=old.remote)
        view.risk.rescore_after = old.rescore_after
    view.tiers = {name: compile_tier(name, tier) for name, tier in policy.tiers.items()}
    view.refused = Refused()
    view.bands = Bands(policy.hysteresis.cooldown)
    clearance = policy.challenges.clearance
    keys = [resolve_secret(ref) for ref in clearance.secrets] or [guard.secret]
    view.clearances = ClearanceSigner(keys, clearance)
    view.siteverify, view.widget = _captcha(policy, current.siteverify)
    view._prefix = policy.challenges.prefix + "/"
    view.desk = ChallengeDesk(view)
    view.policies = RateLimitPolicies()
    view.sample_allowed = policy.audit.sample_allowed
    view._provenance = captured_routes(policy)
    view.seeds = seeds_of(policy)
    view.signer = signer_of(policy, guard.clock)
    return view


def _captcha(
    policy: Policy, current: Siteverify | None
) -> tuple[Siteverify | None, tuple[Provider, str] | None]:
    """The CAPTCHA offered, as ``Guardrail.__init__`` picks it: the first one the order names.
    The one in force is kept when unchanged (its HTTP client with it)."""
    offered = policy.challenges
    for name in offered.order:
        provider = {"hcaptcha": HCAPTCHA, "turnstile": TURNSTILE}.get(name)
        captcha = getattr(offered, name, None) if provider is not None else None
        if provider is not None and captcha is not None:
            same = current is not None and (current.config, current.provider) == (captcha, provider)
            siteverify = current if same and current is not None else Siteverify(captcha, provider)
            return siteverify, (provider, captcha.sitekey)
    return None, None
