"""The risk engine: read an identity's state, fold in the request, score it, write it back.

One ``load`` and one ``save`` per request (two Redis round trips, each pipelined; the save
can run alongside the limit check). The score is the sum of each enabled signal's value times
its points (``catalog``) times its policy weight, capped at 100; the decision carries every
non-zero contribution, largest first, which is what the audit log shows.

In process (the memory store) most requests of a busy principal take a shorter way: its
*standing* (its last full assessment, at most RESCORE_AFTER old, in no band) decides them,
and the request is folded into the state as a full assessment would fold it, unless it brings
evidence (extraction-shaped parameters, a new network, a prompt that asks for reasoning or
repeats a template), which is always assessed in full.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from ipaddress import ip_address
from operator import mul

from starlette.types import Scope

from guardrail import metering
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
    FRM,
    GN,
    GQ,
    GS,
    HOUR0,
    PAS,
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
    LocalRiskStore,
    RiskStore,
    Snapshot,
    Standing,
    Update,
)

#: Gaps longer than this end a session: they measure sleep, not timing.
SESSION_BREAK = 1800.0
#: Prompt analysis (sketch, templates, reasoning patterns) is most of the engine's cost. Once a
#: principal's shares rest on ANALYSE_ALL_UNTIL prompts, one prompt in ANALYSE_EVERY keeps them
#: current (numerators and denominators are sampled alike, so the shares stay unbiased), unless
#: it already scores ANALYSE_ALL_FROM: then its evidence decides whether it crosses a threshold,
#: and every prompt is read (``guardrail simulate --seed 1`` prints the same table as with
#: every prompt analysed). Only where the store can tell without I/O (memory); a shared store
#: analyses every prompt.
ANALYSE_ALL_UNTIL = 32.0
ANALYSE_EVERY = 16
ANALYSE_ALL_FROM = 20.0
#: Challenges failed (decayed) from which a principal's score is 100, the top band: each
#: failure alone adds ``failed_challenges``, three are its full 30 points, five are a farm
#: guessing (4.5: five within a fraction of a half-life, a little decayed).
FAILURES_TO_BLOCK = 4.5
#: A principal's standing (its last full assessment) decides its requests for this long, unless
#: it is in a band, or a request brings evidence (a prompt to analyse, an extraction-shaped
#: parameter set). Its signals move with decayed counters over hours: a second is nothing to
#: them, and at a busy principal's rate it saves most of the engine's work.
RESCORE_AFTER = 1.0
#: Instructions (system prompts) whose verdict is kept, and the longest kept: what the clients
#: of a deployment send (at most 16 MB); a longer one is read each time.
INSTRUCTIONS_KEPT = 1024
INSTRUCTIONS_LONGEST = 16384
#: The order the scorer computes signals in. The first nine describe how an identity itself
#: behaves, as its cohorts see it ("manner"); refusals and failed challenges are consequences
#: of guardrail's own answers, and volume is not a manner.
ORDER = (
    "timing_regularity",
    "round_the_clock",
    "prompt_templating",
    "reasoning_extraction",
    "cross_account_templates",
    "network_spread",
    "request_shape",
    "templated_reasoning",
    "shared_frames",
    "request_volume",
    "refusals",
    "failed_challenges",
    "passed_challenges",
    "subnet_cohort",
    "fingerprint_cohort",
)
_NO_INCREMENTS = [0.0] * len(PRINCIPAL)
_new = tuple.__new__  # a NamedTuple without its Python-level __new__, on the hot path
#: What an analysed prompt shows: it asks for reasoning, it repeats one of its principal's
#: recent prompts, it repeats another principal's, other principals on its network sent its
#: frame.
Read = tuple[bool, bool, bool, bool]
#: Other principals on a network that must have sent a frame for it to be shared: two
#: accounts are a couple at home; three sending one instruction are a team or a farm.
FRAME_SENDERS = 2


@dataclass(slots=True)
class Assessment:
    """The risk engine's view of one request; ``commit`` writes what it learned."""

    keys: Keys
    score: float
    values: list[float] | None  # each signal's value (0-1), in ORDER; None: decided from
    # the principal's standing, without a breakdown
    points: list[float]  # each signal's points times its policy weight, in ORDER
    threshold: Threshold | None  # the band the principal is in, after hysteresis
    update: Update | None  # what commit writes (None: nothing left to write)
    remote: bool = False  # the state is in Redis: its write can share a round trip
    degraded: bool = False  # the shared store failed; the local fallback decided
    known: bool = True  # the principal had state: False, only an admitted request creates it
    template: bytes | None = None  # a folded request's template entry, pushed once admitted
    at: float = 0.0  # when it was folded

    @property
    def signals(self) -> dict[str, float]:
        """Non-zero contributions in points, largest first: computed on demand, since only
        mitigations and sampled records are written with them."""
        if self.values is None:
            return {}
        contributions = sorted(
            (
                (round(value * weight, 1), name)
                for name, value, weight in zip(ORDER, self.values, self.points, strict=True)
                if value > 0 and weight != 0
            ),
            reverse=True,
        )
        return {name: points for points, name in contributions if points != 0}


def principal_of(subject: Subject) -> str:
    """The most specific identity: scores follow an account across its keys and addresses."""
    if subject.account is not None:
        return "a:" + subject.account
    if subject.api_key is not None:
        return subject.api_key  # already "k:<keyed hash>"
    return "i:" + (subject.ip_key or subject.ip)  # an IPv6 client's network, not its /128


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
        self._local = store if isinstance(store, LocalRiskStore) else None
        self.half_life = risk.half_life
        self.window = risk.half_life
        self._undecay = sketch.undecay_table(risk.half_life / 3600)
        weights = {name: conf.weight for name, conf in risk.signals.items()}
        self.points = {s.name: s.points * weights.get(s.name, 1.0) for s in SIGNALS}
        self._points = [self.points[name] for name in ORDER]
        reasoning = risk.signals.get("reasoning_extraction")
        patterns = reasoning.patterns if reasoning is not None else None
        self.asks_for_reasoning = features.ReasoningMatcher(patterns)
        self.thresholds = policy.thresholds
        self._entries = [t.score for t in policy.thresholds]
        self.margin = policy.hysteresis.margin
        self.cooldown = policy.hysteresis.cooldown
        allow = policy.allow
        self._allow_accounts = frozenset(allow.accounts)
        self._allow_keys = frozenset(allow.api_keys)
        self._allow_nets = tuple(allow.cidrs)
        self._limit_rates: dict[str, float | None] = {}
        self._sample = random.Random(0x5EED).random
        self.rescore_after = RESCORE_AFTER  # 0 in tests and benchmarks: every request rescored
        self._instructions: dict[str, bool] = {}

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
        subnet = "s:" + subject.subnet
        fingerprint = features.fingerprint(scope)
        prompt = request.prompt if request is not None else ""
        local = self._local
        if local is not None and (standing := local.standing(principal, now)) is not None:
            # Pseudo-random, not a round-robin counter: accounts that take turns in lockstep
            # would otherwise always land on the same side of it. Seeded, so a simulation
            # replays.
            if (
                prompt
                and standing.evidence >= ANALYSE_ALL_UNTIL
                and standing.score < ANALYSE_ALL_FROM
                and self._sample() * ANALYSE_EVERY >= 1.0
            ):
                prompt = ""
            if standing.level == 0 and now - standing.scored < self.rescore_after:
                if not prompt:
                    keys = _new(Keys, (principal, subnet, fingerprint, ()))
                    if self._fold(local, keys, standing, request, now)[0]:
                        return Assessment(keys, standing.score, None, self._points, None, None)
                else:
                    asks, sk = self._analyse(request, prompt, subnet)
                    keys = Keys(principal, subnet, fingerprint, _indexed(sk, request))
                    folded, read = self._fold(local, keys, standing, request, now, sk, asks)
                    if folded:
                        assessment = Assessment(
                            keys, standing.score, None, self._points, None, None
                        )
                        if sk is not None:  # its template waits for the limits' answer
                            tag = sketch.bit(principal, 1 << 32)
                            assessment.template = sk.pack_template(tag, now)
                            assessment.at = now
                        return assessment
                    return await self._assess(route, keys, request, now, sk, asks, read)
        if not prompt:
            keys = Keys(principal, subnet, fingerprint, ())
            return await self._assess(route, keys, request, now, None, None)
        asks, sk = self._analyse(request, prompt, subnet)
        keys = Keys(principal, subnet, fingerprint, _indexed(sk, request))
        return await self._assess(route, keys, request, now, sk, asks)

    def _analyse(
        self, request: OpenAIRequest | None, prompt: str, subnet: str
    ) -> tuple[bool, sketch.Sketch | None]:
        """Does the request ask for reasoning, and the sketch of its prompt's template, which
        leaves requests for reasoning out (``ReasoningMatcher.split``). A request for
        reasoning counts in the instructions too (system or developer messages): moving it
        there must not hide it. A prompt that asks for reasoning also has its frames on its
        network (``subnet``) taken: ``Sketch.frame``."""
        matcher = self.asks_for_reasoning
        cut = sketch.excerpt(prompt)
        asks, rest = matcher.split(cut)
        if not asks:
            asks = matcher.anywhere(sketch.middle(prompt)) or (
                request is not None and self._instructed(request)
            )
        sk = sketch.sketch(prompt, rest)
        if asks and sk is not None:
            sk.frame(cut, subnet)
        return asks, sk

    def _instructed(self, request: OpenAIRequest) -> bool:
        """Do the request's instructions ask for reasoning? A client sends the same ones
        again and again (a tool's long system prompt), so the answer is kept, by their text:
        a CRC can be forged to match another prompt's, and would share its answer."""
        text = metering.instructions(request.body)
        if not text:
            return False
        known = self._instructions.get(text)
        if known is None:
            matcher = self.asks_for_reasoning
            known = matcher(sketch.excerpt(text)) or matcher.anywhere(sketch.middle(text))
            if len(text) <= INSTRUCTIONS_LONGEST:
                if len(self._instructions) >= INSTRUCTIONS_KEPT:
                    self._instructions.clear()
                self._instructions[text] = known
        return known

    async def _assess(
        self,
        route: CompiledRoute,
        keys: Keys,
        request: OpenAIRequest | None,
        now: float,
        sk: sketch.Sketch | None,
        asks: bool | None,
        read: Read | None = None,
    ) -> Assessment:
        """Load, score, and leave the update for ``commit``. ``asks``: whether the analysed
        prompt asks for reasoning (None: no prompt analysed); ``read``: what the prompt
        showed, when ``_fold`` has already read it."""
        degraded = False
        try:
            snap = await self.store.load(keys, now)
        except StorageError:
            if self.fallback is None:
                raise
            degraded = True
            snap = await self.fallback.load(keys, now)
        assessment = self._score(route, keys, snap, sk, request, asks, now, read)
        assessment.degraded = degraded
        assessment.remote = self.remote and not degraded
        return assessment

    async def commit(self, assessment: Assessment, admitted: bool = True) -> None:
        """Write what the request added. ``admitted``: the limits let it through; a refused
        request buys no state (no new principal, fingerprint cohort or template bucket), or
        one client with random keys could evict everyone else's."""
        update = assessment.update
        if update is None:  # folded already, from the standing, but for its template
            template = assessment.template
            if admitted and template is not None and self._local is not None:
                self._local.push_template(assessment.keys, template, assessment.at)
            return
        if not admitted:
            update = replace(update, create=False)
        await self._save(assessment, update)

    async def refused(self, assessment: Assessment, now: float) -> None:
        """The app answered 4xx, or a route limit 429 (not the engine's own throttle tier or
        403s: those must not feed the score that caused them). Counted on a principal that
        is there: a refusal creates none."""
        increments = [0.0] * len(PRINCIPAL)
        increments[REF] = 1.0
        await self._save(assessment, Update(now, increments, seen=False, create=False))

    async def challenge_passed(self, subject: Subject, now: float) -> None:
        """A pass takes points off its principal's score (``passed_challenges``)."""
        increments = [0.0] * len(PRINCIPAL)
        increments[PAS] = 1.0
        keys = Keys(principal_of(subject), "s:" + subject.subnet, None, ())
        await self.store.save(keys, Update(now, increments, seen=False))

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

    def _fold(
        self,
        local: LocalRiskStore,
        keys: Keys,
        standing: Standing,
        request: OpenAIRequest | None,
        now: float,
        sk: sketch.Sketch | None = None,
        asks: bool | None = None,
    ) -> tuple[bool, Read | None]:
        """Fold a request decided from its principal's standing into the state, as a full
        assessment would, with the standing's behaviour score for its cohorts. Not folded (and
        nothing written): the request brings evidence worth a full assessment, parameters
        shaped for extraction, a network the principal was not seen on lately, or an analysed
        prompt (``sk``, its sketch; ``asks``, whether it asks for reasoning, None if no prompt
        is analysed) that asks for reasoning or repeats a template. Also returns what the
        prompt showed, if it was read, so that the full assessment does not read it again."""
        gap, hour, max_tokens, temperature, shaped = _per_request(
            standing.last_seen, standing.last_max_tokens, standing.last_temperature, request, now
        )
        spread_bit = sketch.bit(keys.subnet, SPREAD_BITS)
        if shaped or not standing.spread >> spread_bit & 1:  # or a network new to it
            return False, None
        tag = sketch.bit(keys.principal, 1 << 32)
        ring = None
        if asks is not None:
            read = self._read(sk, asks, *local.comparables(keys, now), tag, now, request)
            if any(read):
                return False, read
            if sk is not None:
                ring = sk.pack()  # its template: pushed once the request is admitted
        spread = behaviour.network_spread(standing.spread)
        local.fold(
            keys,
            now,
            gap,
            hour,
            max_tokens,
            temperature,
            spread_bit,
            tag % COHORT_BITS,  # = sketch.bit(principal, COHORT_BITS)
            [1.0, standing.manner, spread],
            asks is not None,
            ring,
        )
        return True, None

    def _read(
        self,
        sk: sketch.Sketch | None,
        asks: bool,
        ring: Sequence[bytes],
        neighbours: Sequence[bytes],
        tag: int,
        now: float,
        request: OpenAIRequest | None,
    ) -> Read:
        """What an analysed prompt shows: does it ask for reasoning (``asks``), is it a
        near-duplicate of one of its principal's recent prompts (``ring``), of another
        principal's (``neighbours``)?

        A recent prompt that the request resends as an earlier turn of its conversation does
        not count: a follow-up in the words of the question before it ("now translate it into
        French", then "into Italian") is a conversation going on, not a template filled in
        again. (A script could resend its last prompt as history to hide a template: that
        costs it the tokens, and the cross-account index still sees it.)"""
        if sk is None:
            return asks, False, False, False
        own = False
        if near := sketch.near(sk, ring):
            history = request is not None and {
                sketch.crc(text) for text in metering.earlier_user_turns(request.body)
            }
            own = not history or any(crc not in history for crc in near)
        other = sketch.any_near_elsewhere(sk, tag, neighbours, now, self.window)
        framed = sketch.frame_senders(sk, tag, neighbours, now, self.window) >= FRAME_SENDERS
        return asks, own, other, framed

    def _score(
        self,
        route: CompiledRoute,
        keys: Keys,
        snap: Snapshot,
        sk: sketch.Sketch | None,
        request: OpenAIRequest | None,
        asks: bool | None,
        now: float,
        read: Read | None = None,
    ) -> Assessment:
        """``asks``: whether the analysed prompt asks for reasoning (None: no prompt analysed),
        ``read`` what it showed if that is known already."""
        # The snapshot's counters are its own: the request is folded into them in place, and
        # ``inc`` keeps what it added for the store.
        c = snap.principal
        gap, hour, max_tokens, temperature, shaped = _per_request(
            snap.last_seen, snap.last_max_tokens, snap.last_temperature, request, now
        )
        inc = _NO_INCREMENTS[:]
        inc[REQ] = 1.0
        c[REQ] += 1.0
        if gap is not None:
            inc[GN], inc[GS], inc[GQ] = 1.0, gap, gap * gap
            c[GN] += 1.0
            c[GS] += gap
            c[GQ] += gap * gap
        inc[HOUR0 + hour] = 1.0
        c[HOUR0 + hour] += 1.0
        if shaped:
            inc[SHP] = 1.0
            c[SHP] += 1.0
        tag = sketch.bit(keys.principal, 1 << 32)
        if asks is not None:  # a prompt analysed (so there is a request)
            inc[PRM] = 1.0
            c[PRM] += 1.0
            if read is None:
                read = self._read(sk, asks, snap.ring, snap.neighbours, tag, now, request)
            reasoning, own, other, framed = read
            if reasoning:
                inc[RSN] = 1.0
                c[RSN] += 1.0
                if framed:
                    inc[FRM] = 1.0
                    c[FRM] += 1.0
            if own:
                inc[TPL] = 1.0
                c[TPL] += 1.0
            if other:
                inc[XAC] = 1.0
                c[XAC] += 1.0
            if reasoning and (own or other):
                inc[TRS] = 1.0
                c[TRS] += 1.0

        spread_bit = sketch.bit(keys.subnet, SPREAD_BITS)
        spread = behaviour.network_spread(snap.spread | (1 << spread_bit))
        values = [
            behaviour.timing_regularity(c),
            behaviour.round_the_clock(c, self._undecay[hour]),
            behaviour.prompt_templating(c),
            behaviour.reasoning_extraction(c),
            behaviour.cross_account_templates(c),
            spread,
            behaviour.request_shape(c),
            behaviour.templated_reasoning(c),
            behaviour.shared_frames(c),
        ]  # the manner signals, in ORDER
        points = self._points
        manner = cohort.behaviour_score(sum(map(mul, values, points)))
        member_bit = tag % COHORT_BITS  # = sketch.bit(principal, COHORT_BITS): one CRC, not two
        s = snap.subnet
        subnet_cohort = cohort.subnet_cohort(
            [s[0] + 1.0, s[1] + manner, s[2] + spread], snap.subnet_members | (1 << member_bit)
        )
        if keys.fingerprint is not None:
            f = snap.fingerprint
            counters = [f[0] + 1.0, f[1] + manner, f[2] + spread]
            fingerprint_cohort = cohort.fingerprint_cohort(
                counters, snap.fingerprint_members | (1 << member_bit)
            )
            if fingerprint_cohort:
                fingerprint_cohort *= cohort.affinity(counters, manner, spread)
            fingerprint_inc = [1.0, manner, spread]
            fingerprint_bit: int | None = member_bit
        else:
            fingerprint_cohort, fingerprint_inc, fingerprint_bit = 0.0, [], None
        values += (
            behaviour.request_volume(c, self.half_life, self._limit_rate(route)),
            behaviour.refusals(c),
            behaviour.failed_challenges(c),
            behaviour.passed_challenges(c),
            subnet_cohort,
            fingerprint_cohort,
        )
        score = round(min(100.0, max(0.0, sum(map(mul, values, points)))), 1)
        if c[FCH] >= FAILURES_TO_BLOCK:
            score = 100.0  # failing again and again: the top band, whatever else is seen
        level, band = self._band(score, snap.band, now)
        # a band past this policy's thresholds (a reload removed some) counts as none: what
        # replaces it holds nothing against it
        gone = snap.band is not None and snap.band.level > len(self.thresholds)
        update = Update(
            now,
            inc,
            max_tokens,
            temperature,
            True,
            sk.pack() if sk is not None else None,
            spread_bit,
            band,
            [1.0, manner, spread],
            member_bit,
            fingerprint_inc,
            fingerprint_bit,
            sk.pack_template(tag, now) if sk is not None else None,
            score,
            manner,
            hold=0.0 if gone else self.cooldown,
        )
        threshold = self.thresholds[level - 1] if level else None
        assessment = Assessment(keys, score, values, points, threshold, update)
        assessment.known = snap.known
        return assessment

    def _band(self, score: float, band: Band | None, now: float) -> tuple[int, Band | None]:
        """Thresholds with hysteresis: a subject rises into a band at once, and leaves it only
        once its score has stayed below the band's entry minus ``margin`` for ``cooldown``.

        Returns the level (0: no band, i: ``thresholds[i-1]``) and the band to store, or None
        when the stored one is still right.
        """
        thresholds = self.thresholds
        target = bisect_right(self._entries, score)  # thresholds are sorted by score
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


def _indexed(sk: sketch.Sketch | None, request: OpenAIRequest | None) -> tuple[str, ...]:
    """The cross-account index buckets a prompt is compared with and pushed on. A short prompt
    (fewer than K distinct bigrams) is indexed only when it opens a conversation: strangers'
    short follow-ups are alike ("ok, and how long would that take?"), and a near copy of one
    is no filled-in template, where a campaign's one-shot template with a short question in
    it is. (A script that sends a made-up earlier turn to stay out costs itself the tokens,
    and is still read for its own templating and its requests for reasoning.)"""
    if sk is None:
        return ()
    if sk.short and (request is None or not metering.opens_conversation(request.body)):
        return sk.frame_buckets()
    return sk.buckets() + sk.frame_buckets()


def _per_request(
    last_seen: float | None,
    last_max_tokens: int,
    last_temperature: float,
    request: OpenAIRequest | None,
    now: float,
) -> tuple[float | None, int, int, float, bool]:
    """What every request brings, given its principal's last request: the gap since (None
    across a session break), its UTC hour, its max_tokens and temperature (-1: none), and
    whether its parameters are extraction-shaped."""
    gap = None
    if last_seen is not None and 0.0 <= now - last_seen <= SESSION_BREAK:
        gap = now - last_seen
    hour = int(now // 3600) % 24
    if request is None:
        return gap, hour, -1, -1.0, False
    temperature = features.temperature_of(request)
    shaped = features.shape(request, temperature, last_max_tokens, last_temperature)
    max_tokens = request.max_tokens if request.max_tokens is not None else -1
    return gap, hour, max_tokens, temperature, shaped
