"""The risk engine: read an identity's state, fold in the request, score it, write it back.

One ``load`` and one ``save`` per request (two Redis round trips, each pipelined; the save
can run alongside the limit check). The score is the sum of each enabled signal's value times
its points (``catalog``) times its policy weight, capped at 100; the decision carries every
non-zero contribution, largest first, which is what the audit log shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_address

from starlette.types import Scope

from guardrail.errors import StorageError
from guardrail.identity import Subject
from guardrail.inspection import OpenAIRequest
from guardrail.limits import CompiledRoute
from guardrail.policy import Policy, Threshold
from guardrail.signals import behaviour, cohort, features, sketch
from guardrail.signals.catalog import SIGNALS
from guardrail.signals.state import (
    COHORT_BITS,
    FCH,
    GN,
    GQ,
    GS,
    HOUR0,
    PRINCIPAL,
    PRM,
    REF,
    REQ,
    RSN,
    SHP,
    SPR,
    SPREAD_BITS,
    TPL,
    XAC,
    Band,
    Keys,
    RiskStore,
    Snapshot,
    Update,
)

#: Gaps longer than this end a session: they measure sleep, not timing.
SESSION_BREAK = 1800.0
#: Signals that describe how an identity itself behaves, as its cohorts see it (refusals and
#: failed challenges are consequences of guardrail's own answers, volume is not a manner).
_MANNER = (
    "timing_regularity",
    "round_the_clock",
    "prompt_templating",
    "reasoning_extraction",
    "cross_account_templates",
    "network_spread",
    "request_shape",
)


@dataclass(slots=True)
class Assessment:
    """The risk engine's view of one request; ``commit`` writes what it learned."""

    keys: Keys
    score: float
    signals: dict[str, float]  # non-zero contributions in points, largest first
    threshold: Threshold | None  # the band the principal is in, after hysteresis
    update: Update
    remote: bool = False  # the state is in Redis: its write can share a round trip
    degraded: bool = False  # the shared store failed; the local fallback decided


def principal_of(subject: Subject) -> str:
    """The most specific identity: scores follow an account across its keys and addresses."""
    if subject.account is not None:
        return "a:" + subject.account
    if subject.api_key is not None:
        return subject.api_key  # already "k:<keyed hash>"
    return "i:" + subject.ip


class RiskEngine:
    def __init__(
        self,
        policy: Policy,
        store: RiskStore,
        fallback: RiskStore | None = None,
        *,
        remote: bool = False,
    ) -> None:
        risk = policy.risk
        self.store = store
        self.fallback = fallback
        self.remote = remote
        self.half_life = risk.half_life
        self.window = risk.half_life
        weights = {name: conf.weight for name, conf in risk.signals.items()}
        self.points = {s.name: s.points * weights.get(s.name, 1.0) for s in SIGNALS}
        reasoning = risk.signals.get("reasoning_extraction")
        patterns = (
            reasoning.patterns
            if reasoning is not None and reasoning.patterns is not None
            else features.REASONING_PATTERNS
        )
        self.pattern = features.compile_patterns(patterns)
        self.thresholds = policy.thresholds
        self.margin = policy.hysteresis.margin
        self.cooldown = policy.hysteresis.cooldown
        allow = policy.allow
        self._allow_accounts = frozenset(allow.accounts)
        self._allow_keys = frozenset(allow.api_keys)
        self._allow_nets = tuple(allow.cidrs)
        self._limit_rates: dict[str, float | None] = {}

    # -- the hot path ----------------------------------------------------------------------

    def exempt(self, subject: Subject) -> bool:
        """``allow:`` subjects are never escalated (their limits still apply)."""
        if subject.account in self._allow_accounts or subject.api_key in self._allow_keys:
            return True
        if self._allow_nets:
            try:
                address = ip_address(subject.ip)
            except ValueError:
                return False
            return any(address in net for net in self._allow_nets)
        return False

    async def assess(
        self,
        route: CompiledRoute,
        subject: Subject,
        scope: Scope,
        request: OpenAIRequest | None,
        now: float,
    ) -> Assessment:
        principal = principal_of(subject)
        prompt = request.prompt if request is not None else ""
        sk = sketch.sketch(prompt) if prompt else None
        keys = Keys(
            principal,
            "s:" + subject.subnet,
            features.fingerprint(scope),
            sk.buckets() if sk is not None else (),
        )
        degraded = False
        try:
            snap = await self.store.load(keys, now)
        except StorageError:
            if self.fallback is None:
                raise
            degraded = True
            snap = await self.fallback.load(keys, now)
        assessment = self._score(route, keys, snap, sk, request, now)
        assessment.degraded = degraded
        assessment.remote = self.remote and not degraded
        return assessment

    async def commit(self, assessment: Assessment) -> None:
        await self._save(assessment, assessment.update)

    async def refused(self, assessment: Assessment, now: float) -> None:
        """The request was answered 403, 429 or another 4xx."""
        increments = [0.0] * len(PRINCIPAL)
        increments[REF] = 1.0
        await self._save(assessment, Update(now, increments, seen=False))

    async def challenge_failed(self, subject: Subject, now: float) -> None:
        increments = [0.0] * len(PRINCIPAL)
        increments[FCH] = 1.0
        keys = Keys(principal_of(subject), "s:" + subject.subnet, None, ())
        await self.store.save(keys, Update(now, increments, seen=False))

    async def _save(self, assessment: Assessment, update: Update) -> None:
        store = self.store
        if assessment.degraded and self.fallback is not None:
            store = self.fallback
        try:
            await store.save(assessment.keys, update)
        except StorageError:
            if self.fallback is None:
                raise
            await self.fallback.save(assessment.keys, update)

    # -- scoring ---------------------------------------------------------------------------

    def _score(
        self,
        route: CompiledRoute,
        keys: Keys,
        snap: Snapshot,
        sk: sketch.Sketch | None,
        request: OpenAIRequest | None,
        now: float,
    ) -> Assessment:
        inc = [0.0] * len(PRINCIPAL)
        inc[REQ] = 1.0
        if snap.last_seen is not None and 0.0 <= (gap := now - snap.last_seen) <= SESSION_BREAK:
            inc[GN], inc[GS], inc[GQ] = 1.0, gap, gap * gap
        hour = int(now // 3600) % 24
        inc[HOUR0 + hour] = 1.0
        tag = sketch.bit(keys.principal, 1 << 32)
        max_tokens, temperature = -1, -1.0
        if request is not None:
            if request.prompt:
                inc[PRM] = 1.0
                if features.asks_for_reasoning(self.pattern, request.prompt):
                    inc[RSN] = 1.0
            if sk is not None:
                if any(sketch.near_duplicate(sk, sketch.unpack(e)) for e in snap.ring):
                    inc[TPL] = 1.0
                if self._seen_elsewhere(sk, tag, snap.neighbours, now):
                    inc[XAC] = 1.0
            if features.shape(request, snap.last_max_tokens, snap.last_temperature):
                inc[SHP] = 1.0
            max_tokens = request.max_tokens if request.max_tokens is not None else -1
            temperature = features.temperature_of(request)
        c = [a + b for a, b in zip(snap.principal, inc, strict=True)]

        spread_bit = sketch.bit(keys.subnet, SPREAD_BITS)
        subnets = sketch.distinct(snap.spread | (1 << spread_bit), SPREAD_BITS)
        spread = behaviour.network_spread(subnets)
        inc[SPR] = spread
        values = {
            "request_volume": behaviour.request_volume(c, self.half_life, self._limit_rate(route)),
            "timing_regularity": behaviour.timing_regularity(c),
            "round_the_clock": behaviour.round_the_clock(c, hour, self.half_life),
            "prompt_templating": behaviour.prompt_templating(c),
            "reasoning_extraction": behaviour.reasoning_extraction(c),
            "cross_account_templates": behaviour.cross_account_templates(c),
            "network_spread": spread,
            "request_shape": behaviour.request_shape(c),
            "refusals": behaviour.refusals(c),
            "failed_challenges": behaviour.failed_challenges(c),
        }
        points = self.points
        manner = cohort.behaviour_score(sum(values[n] * points[n] for n in _MANNER))

        member_bit = sketch.bit(keys.principal, COHORT_BITS)
        subnet_inc = [1.0, manner, spread]
        values["subnet_cohort"] = cohort.subnet_cohort(
            _add(snap.subnet, subnet_inc), snap.subnet_members | (1 << member_bit)
        )
        fingerprint_inc: list[float] = []
        if keys.fingerprint is not None:
            fingerprint_inc = [1.0, manner, 0.0]
            values["fingerprint_cohort"] = cohort.fingerprint_cohort(
                _add(snap.fingerprint, fingerprint_inc),
                snap.fingerprint_members | (1 << member_bit),
            )

        contributions = {
            name: round(value * points[name], 1)
            for name, value in values.items()
            if value > 0 and points[name] > 0
        }
        signals = {
            name: pts
            for name, pts in sorted(contributions.items(), key=lambda kv: -kv[1])
            if pts > 0
        }
        score = round(min(100.0, sum(value * points[n] for n, value in values.items())), 1)
        level, band = self._band(score, snap.band, now)
        update = Update(
            now,
            inc,
            max_tokens=max_tokens,
            temperature=temperature,
            ring=sk.pack() if sk is not None else None,
            spread_bit=spread_bit,
            band=band,
            subnet=subnet_inc,
            subnet_bit=member_bit,
            fingerprint=fingerprint_inc,
            fingerprint_bit=member_bit if keys.fingerprint is not None else None,
            template=sk.pack_template(tag, now) if sk is not None else None,
        )
        threshold = self.thresholds[level - 1] if level else None
        return Assessment(keys, score, signals, threshold, update)

    def _seen_elsewhere(
        self, sk: sketch.Sketch, tag: int, neighbours: Sequence[bytes], now: float
    ) -> bool:
        horizon = int(self.window)
        stamp = int(now) & 0xFFFFFFFF
        for entry in neighbours:
            other_tag, when, other = sketch.unpack_template(entry)
            if (
                other_tag != tag
                and (stamp - when) & 0xFFFFFFFF <= horizon
                and sketch.near_duplicate(sk, other)
            ):
                return True
        return False

    def _band(self, score: float, band: Band | None, now: float) -> tuple[int, Band | None]:
        """Thresholds with hysteresis: a subject rises into a band at once, and leaves it only
        once its score has stayed below the band's entry minus ``margin`` for ``cooldown``.

        Returns the level (0: no band, i: ``thresholds[i-1]``) and the band to store, or None
        when the stored one is still right.
        """
        thresholds = self.thresholds
        target = sum(1 for t in thresholds if score >= t.score)
        current = band.level if band is not None and band.level <= len(thresholds) else 0
        if target >= current:
            if target == 0:
                return 0, None if band is None or band.level == 0 else Band(0, now)
            return target, Band(target, now)
        if score >= thresholds[current - 1].score - self.margin:
            return current, Band(current, now)  # still close to the entry: the hold renews
        assert band is not None
        if now - band.held >= self.cooldown:
            return target, Band(target, now)
        return current, None

    def _limit_rate(self, route: CompiledRoute) -> float | None:
        """Requests per second of the route's tightest per-identity limit (None: none)."""
        try:
            return self._limit_rates[route.name]
        except KeyError:
            rates = [
                1.0 / lim.interval
                for lim in route.charged
                if lim.per in ("api_key", "account", "ip") and lim.cost == 1
            ]
            rate = min(rates) if rates else None
            self._limit_rates[route.name] = rate
            return rate


def _add(state: list[float], increments: list[float]) -> list[float]:
    return [a + b for a, b in zip(state, increments, strict=True)]
