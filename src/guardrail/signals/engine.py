"""The risk engine: read an identity's state, fold in the request, score it, write it back.

One ``load`` and one ``save`` per request (two Redis round trips, each pipelined; the save
can run alongside the limit check). The score is the sum of each enabled signal's value times
its points (``catalog``) times its policy weight, capped at 100; the decision carries every
non-zero contribution, largest first, which is what the audit log shows.
"""

from __future__ import annotations

import random
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
    SPREAD_BITS,
    TPL,
    TRS,
    XAC,
    Band,
    Keys,
    RiskStore,
    Snapshot,
    Update,
)

#: Gaps longer than this end a session: they measure sleep, not timing.
SESSION_BREAK = 1800.0
#: Prompt analysis (sketch, templates, reasoning patterns) is most of the engine's cost. Once an
#: identity's shares rest on this many prompts, one prompt in ANALYSE_EVERY keeps them current:
#: numerators and denominators are sampled alike, so the shares stay unbiased. Only where the
#: store can tell without I/O (memory); a shared store analyses every prompt.
ANALYSE_ALL_UNTIL = 32.0
ANALYSE_EVERY = 4
#: The order the scorer computes signals in. The first eight describe how an identity itself
#: behaves, as its cohorts see it ("manner"); refusals and failed challenges are consequences
#: of guardrail's own answers, and volume is not a manner.
_ORDER = (
    "timing_regularity",
    "round_the_clock",
    "prompt_templating",
    "reasoning_extraction",
    "cross_account_templates",
    "network_spread",
    "request_shape",
    "templated_reasoning",
    "request_volume",
    "refusals",
    "failed_challenges",
    "subnet_cohort",
    "fingerprint_cohort",
)
#: Principal counters a request may increment, apart from its hour.
_FOLDED = (REQ, PRM, TPL, RSN, XAC, SHP, GN, GS, GQ, TRS)


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
        self._undecay = sketch.undecay_table(risk.half_life / 3600)
        weights = {name: conf.weight for name, conf in risk.signals.items()}
        self.points = {s.name: s.points * weights.get(s.name, 1.0) for s in SIGNALS}
        self._points = [self.points[name] for name in _ORDER]
        reasoning = risk.signals.get("reasoning_extraction")
        patterns = reasoning.patterns if reasoning is not None else None
        self.asks_for_reasoning = features.ReasoningMatcher(patterns)
        self.thresholds = policy.thresholds
        self.margin = policy.hysteresis.margin
        self.cooldown = policy.hysteresis.cooldown
        allow = policy.allow
        self._allow_accounts = frozenset(allow.accounts)
        self._allow_keys = frozenset(allow.api_keys)
        self._allow_nets = tuple(allow.cidrs)
        self._limit_rates: dict[str, float | None] = {}
        self._sample = random.Random(0x5EED).random

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
        if prompt and not self._analyse(principal, now):
            prompt = ""
        cut = sketch.excerpt(prompt) if prompt else ""
        sk = sketch.sketch(prompt, cut) if prompt else None
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
        assessment = self._score(route, keys, snap, sk, request, prompt, cut, now)
        assessment.degraded = degraded
        assessment.remote = self.remote and not degraded
        return assessment

    async def commit(self, assessment: Assessment) -> None:
        await self._save(assessment, assessment.update)

    async def refused(self, assessment: Assessment, now: float) -> None:
        """The app answered 4xx, or a route limit 429 (not the engine's own throttle tier or
        403s: those must not feed the score that caused them)."""
        increments = [0.0] * len(PRINCIPAL)
        increments[REF] = 1.0
        await self._save(assessment, Update(now, increments, seen=False))

    async def challenge_failed(self, subject: Subject, now: float) -> None:
        increments = [0.0] * len(PRINCIPAL)
        increments[FCH] = 1.0
        keys = Keys(principal_of(subject), "s:" + subject.subnet, None, ())
        await self.store.save(keys, Update(now, increments, seen=False))

    async def _save(self, assessment: Assessment, update: Update) -> None:
        # Writes go where the read came from. A write that fails after a good read is not
        # diverted to the fallback, which nobody reads while the store answers: it raises, and
        # the caller logs it (the evidence of one request is lost, visibly).
        if assessment.degraded and self.fallback is not None:
            await self.fallback.save(assessment.keys, update)
        else:
            await self.store.save(assessment.keys, update)

    # -- scoring ---------------------------------------------------------------------------

    def _score(
        self,
        route: CompiledRoute,
        keys: Keys,
        snap: Snapshot,
        sk: sketch.Sketch | None,
        request: OpenAIRequest | None,
        prompt: str,
        cut: str,
        now: float,
    ) -> Assessment:
        """``prompt``: the prompt if it is analysed ("" if not), ``cut`` its lowercased
        excerpt (``sketch.excerpt``)."""
        inc = [0.0] * len(PRINCIPAL)
        inc[REQ] = 1.0
        if snap.last_seen is not None and 0.0 <= (gap := now - snap.last_seen) <= SESSION_BREAK:
            inc[GN], inc[GS], inc[GQ] = 1.0, gap, gap * gap
        hour = int(now // 3600) % 24
        tag = sketch.bit(keys.principal, 1 << 32)
        max_tokens, temperature = -1, -1.0
        if request is not None:
            if prompt:
                inc[PRM] = 1.0
                if self.asks_for_reasoning(cut):
                    inc[RSN] = 1.0
            if sk is not None:
                if sketch.any_near(sk, snap.ring):
                    inc[TPL] = 1.0
                if sketch.any_near_elsewhere(sk, tag, snap.neighbours, now, self.window):
                    inc[XAC] = 1.0
            if inc[RSN] and (inc[TPL] or inc[XAC]):
                inc[TRS] = 1.0
            temperature = features.temperature_of(request)
            if features.shape(request, temperature, snap.last_max_tokens, snap.last_temperature):
                inc[SHP] = 1.0
            max_tokens = request.max_tokens if request.max_tokens is not None else -1
        c = snap.principal[:]
        for i in _FOLDED:
            c[i] += inc[i]
        c[HOUR0 + hour] += 1.0

        spread_bit = sketch.bit(keys.subnet, SPREAD_BITS)
        spread = behaviour.network_spread(
            sketch.distinct(snap.spread | (1 << spread_bit), SPREAD_BITS)
        )
        points = self._points
        values = [
            behaviour.timing_regularity(c),
            behaviour.round_the_clock(c, self._undecay[hour]),
            behaviour.prompt_templating(c),
            behaviour.reasoning_extraction(c),
            behaviour.cross_account_templates(c),
            spread,
            behaviour.request_shape(c),
            behaviour.templated_reasoning(c),
        ]  # the manner signals, in _ORDER
        manner = cohort.behaviour_score(sum(v * p for v, p in zip(values, points, strict=False)))
        values += (
            behaviour.request_volume(c, self.half_life, self._limit_rate(route)),
            behaviour.refusals(c),
            behaviour.failed_challenges(c),
        )
        member_bit = tag % COHORT_BITS  # = sketch.bit(principal, COHORT_BITS): one CRC, not two
        subnet_inc = [1.0, manner, spread]
        s = snap.subnet
        values.append(
            cohort.subnet_cohort(
                [s[0] + 1.0, s[1] + manner, s[2] + spread], snap.subnet_members | (1 << member_bit)
            )
        )
        fingerprint_inc: list[float] = []
        if keys.fingerprint is not None:
            fingerprint_inc = [1.0, manner, spread]
            f = snap.fingerprint
            values.append(
                cohort.fingerprint_cohort(
                    [f[0] + 1.0, f[1] + manner, f[2] + spread],
                    snap.fingerprint_members | (1 << member_bit),
                )
            )
        else:
            values.append(0.0)

        score = 0.0
        contributions = []
        for name, value, weight in zip(_ORDER, values, points, strict=True):
            if value > 0 and weight > 0:
                score += value * weight
                contributions.append((round(value * weight, 1), name))
        contributions.sort(reverse=True)
        signals = {name: pts for pts, name in contributions if pts > 0}
        score = round(min(100.0, score), 1)
        inc[HOUR0 + hour] = 1.0
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

    def _analyse(self, principal: str, now: float) -> bool:
        evidence = self.store.evidence(principal, now)
        if evidence is None or evidence < ANALYSE_ALL_UNTIL:
            return True
        # Pseudo-random, not a round-robin counter: accounts that take turns in lockstep would
        # otherwise always land on the same side of it. Seeded, so a simulation replays.
        return self._sample() * ANALYSE_EVERY < 1.0

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
            # Step down to the highest band whose exit line the score still holds: a blocked
            # subject at 70 goes to challenge (exit 65), not straight to throttle.
            for level in range(current - 1, target, -1):
                if score >= thresholds[level - 1].score - self.margin:
                    return level, Band(level, now)
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
