"""Guardrail: the pure-ASGI middleware that walks a request through the pipeline.

identity → route → what is known without the body (``early``) → inspection → risk signals →
decision (thresholds, hysteresis) → limits (one storage call for all buckets, the tier's
included) → action → audit.
Response bodies are never buffered: the only thing guardrail touches on the way out is the
header list of ``http.response.start``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from guardrail.actions.captcha import Provider, Siteverify
from guardrail.actions.clearance import ClearanceSigner
from guardrail.actions.endpoints import ChallengeDesk
from guardrail.actions.hcaptcha import HCAPTCHA
from guardrail.actions.limit import (
    RateLimitPolicies,
    ratelimit_headers,
    send_limited,
    send_unavailable,
)
from guardrail.actions.tier import CompiledTier, compile_tier, rewrite, send_unrewritable
from guardrail.actions.timeout import send_timeout
from guardrail.actions.turnstile import TURNSTILE
from guardrail.actions.unmatched import send_unmatched
from guardrail.audit import AuditLog, at_exit, sink_from_uri
from guardrail.audit.aggregate import Refusals, refusal_key
from guardrail.audit.record import decision_record
from guardrail.audit.unmatched import Unmatched
from guardrail.backends import challenge_store, risk_engine, storage_from_uri
from guardrail.backends.base import BucketCharge, Outcome, Storage
from guardrail.backends.breaker import BreakerOpen, GuardedStorage
from guardrail.backends.memory import MemoryStorage
from guardrail.budgets import Budget, Reservation, Settlements, reservation
from guardrail.building import deferring
from guardrail.cautions import cautions
from guardrail.deadlines import Deadlines
from guardrail.decision import (
    ALLOW,
    BLOCK,
    CHALLENGE,
    LIMIT,
    THROTTLE,
    TIMEOUT,
    Decision,
    RequestIds,
)
from guardrail.early import Bands, Refused
from guardrail.errors import StorageError
from guardrail.identity import IdentityResolver
from guardrail.inspection import (
    BodyTimeout,
    declared_size,
    declares_body,
    parse_head,
    read_body,
    replace_body,
)
from guardrail.instances import claim, release
from guardrail.lifespan import lifespan
from guardrail.limits import (
    CompiledLimit,
    CompiledRoute,
    RouteTable,
    as_reported,
    token_charges,
)
from guardrail.metering import CHAT, OPENAI, Meter, meter_for_path
from guardrail.metrics import metrics_for
from guardrail.paths import canonical, irregular, route_path
from guardrail.policy import Policy
from guardrail.provenance.capture import Capture
from guardrail.provenance.hooks import captured_routes, seeds_of, signer_of
from guardrail.provenance.recorder import Recorder
from guardrail.provenance.sketch import Sketcher
from guardrail.relay import Relay, identity_scope, with_headers
from guardrail.reload import Reloader
from guardrail.secrets import chain_secret, policy_secret, resolve_secret
from guardrail.signals.engine import Assessment, RiskEngine, principal_of

logger = logging.getLogger("guardrail")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
_UNMANAGED_PATIENCE = 1.0  # seconds a request without lifespan waits for its audit records

UNMATCHED_EVERY = 10.0  # seconds between counts of unmatched requests when audit.aggregate is 0


class Guardrail:
    @deferring  # built by Starlette on its first call: an error waits for the startup
    def __init__(
        self,
        app: ASGIApp,
        *,
        policy: Policy | str | os.PathLike[str],
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        storage: str | None = None,
        audit: str | None = None,
    ) -> None:
        self.app = app
        self._policy = policy if isinstance(policy, Policy) else Policy.from_yaml(policy)
        self.clock: Clock = clock or time.time
        self.sleep: Sleep = sleep or asyncio.sleep
        self.enforce = self._policy.mode == "enforce"
        for caution in cautions(self._policy):  # what `guardrail check` warns of, said once
            logger.warning("guardrail: %s", caution)
        storage_uri = storage or self._policy.storage
        self.secret = policy_secret(self._policy, storage_uri)
        self.identity = IdentityResolver(self._policy.identity, self.secret)
        self.routes = RouteTable(self._policy.routes, self._policy.unmatched)
        self._refuse_unmatched = self.routes.refuse and self.enforce
        # The breaker probes on real time, not on ``sleep``: Redis recovers in real time,
        # whatever clock the limits read.
        self.storage: Storage = storage_from_uri(
            storage_uri,
            max_subjects=self._policy.max_subjects,
            breaker=self._policy.storage_breaker,
        )
        self.fallback: MemoryStorage | None = (
            MemoryStorage(self._policy.max_subjects)
            if self._policy.on_storage_error == "fail_open" and not storage_uri.startswith("memory")
            else None
        )
        if self.fallback is not None and isinstance(self.storage, GuardedStorage):
            # Redis back: its counts are everyone's; the fallback's were this outage's only
            self.storage.breaker.on_close(self.fallback.clear)
        self.metrics = metrics_for(self._policy.metrics)  # a no-op unless the policy asks
        self._metrics_path = self._policy.metrics.served_on
        self._counting = self.metrics.enabled  # read on every request: an attribute, no call
        if self.metrics.enabled and isinstance(self.storage, GuardedStorage):
            self.storage.breaker.metrics = self.metrics
            self.metrics.breaker(False)
        # The risk engine runs when the policy has thresholds to act on.
        self.risk: RiskEngine | None = None
        if self._policy.thresholds:
            self.risk = risk_engine(
                self._policy, self.storage, self.fallback is not None, self.clock
            )
        self.tiers = {name: compile_tier(name, tier) for name, tier in self._policy.tiers.items()}
        # What is refused before a body is read, and how long a body may take to arrive
        self.refused = Refused()
        self.bands = Bands(self._policy.hysteresis.cooldown)
        timeouts = [r.inspect_timeout for r in self.routes.routes if r.meter is not None]
        self.deadlines = Deadlines(tick=min(1.0, max(0.01, min(timeouts, default=1.0) / 10)))
        self.challenges = challenge_store(self.storage)
        clearance = self._policy.challenges.clearance
        keys = [resolve_secret(ref) for ref in clearance.secrets] or [self.secret]
        self.clearances = ClearanceSigner(keys, clearance)
        # The CAPTCHA offered: the first one the order names
        self.siteverify: Siteverify | None = None
        self.widget: tuple[Provider, str] | None = None
        offered = self._policy.challenges
        for name in offered.order:
            provider = {"hcaptcha": HCAPTCHA, "turnstile": TURNSTILE}.get(name)
            captcha = getattr(offered, name, None) if provider is not None else None
            if provider is not None and captcha is not None:
                self.siteverify = Siteverify(captcha, provider)
                self.widget = (provider, captcha.sitekey)
                break
        self._prefix = self._policy.challenges.prefix + "/"
        self.desk = ChallengeDesk(self)
        self.policies = RateLimitPolicies()
        self.settlements = Settlements(
            lambda exc: self._warn_storage(exc, self.clock()), self.sleep, self.clock
        )
        conf = self._policy.audit
        self.audit = AuditLog(
            sink_from_uri(
                audit or conf.sink, max_bytes=conf.rotate.max_bytes, keep=conf.rotate.keep
            ),
            hash_chain=conf.hash_chain,
            chain_key=chain_secret(self._policy),
        )
        self.refusals = Refusals(self.audit.emit, conf.aggregate, self.clock)
        self.seeds = seeds_of(self._policy)
        self.signer = signer_of(self._policy, self.clock)
        head = {"policy": self._policy.digest, "mode": self._policy.mode}
        every = conf.aggregate or UNMATCHED_EVERY
        self.unmatched = Unmatched(self.audit.emit, head, self._policy.unmatched, every, self.clock)
        self.audit.before_exit = self._before_exit  # the held counts, if the process ends
        self.metrics.watch(self.audit)
        self._unmanaged = False  # started by a request: no lifespan will call shutdown()
        self.sample_allowed = conf.sample_allowed
        self.request_ids = RequestIds()
        self._ready: asyncio.Future[None] | None = None
        self._started = False  # read on every request: cheaper than asking the future
        self._storage_warned_at = float("-inf")
        # provenance: the routes whose responses are captured (empty: off, no wrapper at all)
        self.recorder, self._provenance = _provenance(self._policy, self.clock, self.storage)
        self._view = self  # what requests are decided on: another after a reload (reload.py)
        self._reloader = Reloader(self)

    @property
    def policy(self) -> Policy:
        """The policy in force: after a reload, the one reloaded (requests under way end on the
        one they started on)."""
        return self._view._policy

    # -- lifecycle -------------------------------------------------------------------------

    async def startup(self) -> None:
        """Start guardrail's own resources; called on lifespan startup or the first request."""
        ready = self._ready
        if ready is None or (ready.done() and (ready.cancelled() or ready.exception())):
            ready = self._ready = asyncio.ensure_future(self._start())
        # Shielded: the first request being cancelled (its client left) must not cancel the
        # start that every later request relies on.
        await asyncio.shield(ready)

    async def _start(self) -> None:
        await self.audit.start()
        claim(self, self.audit.sink)
        try:
            await self.storage.start()
            if self.risk is not None:
                await self.risk.store.start()
        except StorageError as exc:
            # Not fatal: each request then follows on_storage_error until the store is back.
            logger.warning("guardrail: storage unavailable at startup: %s", exc)
        if self.recorder is not None:
            await self.recorder.start()
        self._started = True
        await self._reloader.arm(self._policy.reload)

    async def _first_request(self) -> None:
        # No lifespan started us, so none will stop us: the trail is written as the process
        # ends (guardrail.audit.at_exit), and each request waits for its own records (__call__).
        if self._ready is None:
            self._unmanaged = True
        await self.startup()
        if self._unmanaged:
            at_exit.watch(self.audit)

    def _before_exit(self) -> None:
        """The process ends without lifespan: what is held back is written now."""
        self._close_counts()
        if self.recorder is not None:
            self.recorder.exit_sync()

    def _close_counts(self) -> None:
        """Write the counts held back: refusals and unmatched requests not yet recorded."""
        self.refusals.close()
        self.unmatched.close()

    async def shutdown(self) -> None:
        """Flush the audit trail and close connections (lifespan shutdown, or call it yourself)."""
        await self._reloader.close()
        await self.settlements.wait()  # token settlements still on their way to the storage
        if self.recorder is not None:
            await self.recorder.close()
        self._close_counts()
        await self.audit.close()
        release(self, self.audit.sink)
        if self.siteverify is not None:
            await self.siteverify.close()
        if self.risk is not None:
            await self.risk.store.close()
        await self.storage.close()
        if self.fallback is not None:
            await self.fallback.close()
        self.metrics.close()

    aclose = shutdown

    async def reload(self, policy: Policy | str | os.PathLike[str] | None = None) -> Policy:
        """Swap in ``policy`` (by default the policy's file, read again) between requests,
        keeping buckets, risk state and the audit trail; returns the policy in force. Raises
        PolicyError, the old policy kept, when it does not validate or changes what only a
        restart can (see ``guardrail.reload``)."""
        return await self._reloader.reload(policy)

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            view = self._view  # read once: the request ends on the policy it started on
            if self._started and not self._unmanaged:
                await view._http(scope, receive, send)
                return
            emitted = self.audit.emitted
            await view._http(scope, receive, send)
            if self._unmanaged and self.audit.emitted != emitted:
                # A server stopping without lifespan waits for its request tasks, not for
                # guardrail's writer: the response is sent, its records reach the trail now.
                await self.audit.caught_up(_UNMANAGED_PATIENCE)
        elif kind == "websocket":
            await self._view._websocket(scope, receive, send)
        elif kind == "lifespan":
            await lifespan(self, self.app, scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        seeds = self.seeds
        if seeds is not None:  # provenance.watermark: a client never chooses its seed
            scope = seeds.strip(scope)
        path = scope["path"]
        root = scope.get("root_path")
        if root:  # under a mount or a --root-path: what the app routes on
            path = route_path(scope)
        if path == self._metrics_path:  # None while metrics are off
            await self._serve_metrics(scope, send)
            return
        if path.startswith(self._prefix) and self.risk is not None:
            await self.desk(scope, receive, send, path)
            return
        route = self.routes.match(path, scope["method"])
        if root or "//" in path or (path[-1:] == "/" and len(path) > 1):  # paths.irregular
            # what a framework that normalises the path routes on may name another route
            path, route = self._canonical(scope, path, route, scope["method"])
        request_id = self.request_ids()
        id_header = (b"guardrail-request-id", request_id.encode())
        if route is None:  # the policy names no such path: counted, then as `unmatched:` says
            if not self._started:  # the count is written to the trail
                await self._first_request()
            self.unmatched.count(scope["method"], path, self.clock())
            route = self.routes.default
            # refuse: a CORS preflight still passes (it carries no body and is never served
            # by a model); observe mode refuses nothing, the count says what it would have
            if route is None and self._refuse_unmatched and scope["method"] != "OPTIONS":
                await send_unmatched(
                    send, request_id=request_id, headers=_unread(scope, [id_header])
                )
                return
        if route is None or route.exempt:
            await self.app(scope, receive, with_headers(send, [id_header], None))
            return
        if not self._started:
            await self._first_request()

        now = self.clock()
        decision = Decision(request_id, route.name, self.identity.resolve(scope), self.enforce)
        scope.setdefault("state", {})["guardrail"] = decision
        if seeds is not None:
            decision.watermark = seeds.for_subject(decision.subject)
            scope = seeds.give(scope, decision.watermark)
        headers = [id_header]
        cleared = False  # a clearance was shown, and counted, before the body
        # Free while nothing remembered is still refusing: the latest expiry is past
        if self.enforce and (now < self.refused.latest or now < self.bands.latest):
            answered, cleared = await self._early(route, decision, scope, send, now, headers)
            if answered:
                return
        raw = replay = None
        meter = route.meter
        if meter is not None:
            if route.by_path:  # inspect: openai: the path names the shape, never the body
                meter = CHAT if path.endswith("/chat/completions") else meter_for_path(path)
            try:
                raw, replay = await read_body(
                    receive, route.inspect_max_bytes, self.deadlines, route.inspect_timeout
                )
            except BodyTimeout as late:
                if self.enforce:
                    await self._timed_out(route, decision, scope, send, now, headers)
                    return
                replay = late.replay  # observe: the app waits for the rest, as without guardrail
            receive = replay
            if raw is not None:
                decision.inspected(raw, meter)  # parsed when first read (decision.request)
            elif replay.head:  # too large to parse: its head's prompt is still scored
                decision.request = parse_head(replay.head, meter)
        assessment = tier = None
        if self.risk is not None:
            assessment = await self._assess(route, decision, scope, now)
            if decision.action != ALLOW or decision.storage_error:  # one test on the usual path
                if decision.action == THROTTLE and decision.tier is not None:
                    tier = self.tiers[decision.tier]
                elif decision.action == CHALLENGE and (
                    cleared or await self.desk.cleared(scope, decision, now)
                ):
                    decision.action = ALLOW  # passed a challenge lately: served
                elif decision.action in (CHALLENGE, BLOCK) and self.enforce:
                    if assessment is not None:
                        await self._commit(assessment, now, admitted=False)
                    # Not fed back as refusals: the engine's own answers must not feed it.
                    self._record(scope, decision, now, 403)  # before sending: the client may go
                    await self.desk.refuse(scope, send, decision, now, headers)
                    return
                if decision.storage_error and self.enforce:  # fail_closed: no risk store
                    await send_unavailable(send, request_id=request_id, headers=headers)
                    self._record(scope, decision, now, 503)
                    return
        held = None
        if meter is not None and replay is not None:  # tiers rewrite bodies, budgets meter
            request = None
            rewrote = False  # ``request`` then has the body the app gets
            if tier is not None and tier.rewrites and self.enforce:
                try:
                    rewritten = rewrite(raw, tier, meter)
                except ValueError as unreadable:
                    refusal = 413 if raw is None else 415
                    self._record(scope, decision, now, refusal)
                    await send_unrewritable(
                        send,
                        reason=str(unreadable),
                        status=refusal,
                        request_id=request_id,
                        headers=headers,
                    )
                    return
                if rewritten is not None:
                    scope, receive = replace_body(scope, replay, rewritten[0])
                    request = decision.request
                    request = replace(request, body=rewritten[1]) if request else request
                    rewrote = True
            if route.metered or (tier is not None and tier.metered):
                if not rewrote:
                    request = decision.request
                if request is not None and not request.partial:  # the body the app gets
                    held = reservation(meter.ask(request.body), route.default_max_tokens)
                else:  # unread or unreadable: its size stands in for its prompt
                    unread = declared_size(scope, route.inspect_max_bytes + 1)
                    size = len(raw) if raw is not None else unread
                    held = reservation(None, route.default_max_tokens, size)
        budget = await self._decide(route, decision, now, tier, assessment, held)

        outcome = decision.outcome
        if decision.action == LIMIT and self.enforce:
            if outcome is None:  # fail_closed and the store is down
                await send_unavailable(send, request_id=request_id, headers=headers)
                self._record(scope, decision, now, 503)
                return
            if not decision.degraded:  # the shared storage's word: the next are refused early
                self.refused.learn(route, decision.subject, outcome, now)
            hit = decision.limit
            assert hit is not None  # a refusal always comes from a bucket
            policy = self.policies(route, tier, decision.limits, decision.tokens > 0)
            reported = as_reported(decision.limits, outcome, decision.tokens)
            headers += ratelimit_headers(policy, decision.limits, reported)
            self._record(scope, decision, now, 429)  # before sending: a client gone mid-send
            await send_limited(send, hit=hit, request_id=request_id, headers=headers)
            if tier is None:  # the route's limits, not the throttle tier the engine chose
                await self._refused(assessment, now)
            return
        if route.headers and self.enforce and outcome is not None and outcome.states:
            limits = decision.limits
            if tier is not None and tier.header is None:
                # a silent tier: the route's own limits only (SPEC §3, throttle)
                own = len(route.charged) + (len(route.metered) if decision.tokens else 0)
                limits = limits[:own]
                outcome = Outcome(outcome.allowed, outcome.states[: len(limits)])
                policy = self.policies(route, None, limits, decision.tokens > 0)
            else:
                policy = self.policies(route, tier, limits, decision.tokens > 0)
            headers += ratelimit_headers(policy, limits, outcome)
        pace = delay = 0.0
        if tier is not None and self.enforce:
            pace, delay = tier.pace, tier.delay
            if tier.header is not None:
                headers.append(tier.header)
        if budget is not None or pace:
            metering = (budget, pace, delay, meter or OPENAI)
            await self._relayed(scope, receive, send, headers, decision, now, assessment, metering)
            return
        if delay > 0:
            await self.sleep(delay)
        status = [0]
        capture = None
        if self._provenance and route.name in self._provenance:
            send = capture = Capture(send)  # outermost: it sees the body as the client does
        if self.signer is not None:  # provenance.signatures: sees every header
            send = self.signer.wrap(send)
        try:
            await self.app(scope, receive, with_headers(send, headers, status))
        finally:
            self._served(scope, decision, now, status[0], capture)
        if 400 <= status[0] < 500:  # the client's errors; an app's 5xx is not the client's
            await self._refused(assessment, now)

    async def _relayed(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        decision: Decision,
        now: float,
        assessment: Assessment | None,
        metering: tuple[Budget | None, float, float, Meter],
    ) -> None:
        """Call the app with the relay on the way back: a budget to settle, a tier's pace.
        From here on, whatever happens (the tier's delay included), the budget is settled."""
        budget, pace, delay, meter = metering
        scope = identity_scope(scope)  # what the relay counts and paces must be readable
        capture = None
        if self._provenance and decision.route in self._provenance:
            send = capture = Capture(send)  # outside the relay: after its cut and pacing
        relay = Relay(
            send,
            headers,
            meter=meter,
            budget=budget,
            pace=pace,
            clock=self.clock,
            sleep=self.sleep,
            cut=self.enforce,
        )
        try:
            if delay > 0:
                await self.sleep(delay)
            await self.app(scope, relay.receive(receive), relay)
        except Exception:
            # StreamCut, or what the app made of it: Starlette (ASGI spec 2.4) turns an OSError
            # from send into ClientDisconnect. After a cut the response is complete.
            if not (relay.cut or relay.gone):
                raise
            if relay.cut:
                decision.action = LIMIT  # the budget ran out mid-stream
        finally:
            if budget is not None:
                await self._settle(budget, relay, decision)
            self._served(scope, decision, now, relay.status, capture)
        if 400 <= relay.status < 500 and not relay.gone:  # not guardrail's own 502
            await self._refused(assessment, now)

    def _served(
        self, scope: Scope, decision: Decision, now: float, status: int, capture: Capture | None
    ) -> None:
        """Record what the app served: every decision but a plain allow, and a sample of those;
        on a provenance route, every response, with its receipt, and its output is sketched."""
        if capture is not None:
            self._record(scope, decision, now, status or 500, capture.receipt())
            output = capture.output()
            if output is not None and self.recorder is not None:
                self.recorder.offer(principal_of(decision.subject), output, now)
            return
        if decision.action != ALLOW or (
            self.sample_allowed and random.random() < self.sample_allowed
        ):
            self._record(scope, decision, now, status or 500)
        elif self._counting:
            self.metrics.decided(decision)

    async def _settle(self, budget: Budget, relay: Relay, decision: Decision) -> None:
        used = relay.used()
        decision.used = used
        self.metrics.tokens("settled", decision.route, budget.charged if used is None else used)
        if used is None:
            return  # nothing says what was used: the reservation is the charge
        # Shielded: a request cancelled with its client still gives back what it did not use.
        await asyncio.shield(self.settlements.start(budget.settle(used, self.clock())))

    def _budget_error(self, exc: StorageError) -> bool:
        self._warn_storage(exc, self.clock())
        return self.fallback is not None

    def _canonical(
        self, scope: Scope, path: str, route: CompiledRoute | None, method: str
    ) -> tuple[str, CompiledRoute | None]:
        """The path and route a request is decided on when its path reads differently to a
        framework that normalises it (``paths.canonical``): the normalised reading's route when
        it is one that limits, else the one Starlette's rule found. A client cannot pick the
        reading that dodges a route, whichever framework serves it."""
        other = canonical(scope)
        if other == path:
            return path, route
        found = self.routes.match(other, method)
        if found is None or found.exempt:
            return path, route
        return other, found

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A handshake counts as one request of its route; a refusal closes it before accept,
        # which servers answer with HTTP 403.
        if self.seeds is not None:  # provenance.watermark: a client never chooses its seed
            scope = self.seeds.strip(scope)
        path = route_path(scope)
        route = self.routes.match(path, "GET")
        if irregular(path, scope):
            path, route = self._canonical(scope, path, route, "GET")
        if route is None:
            if not self._started:
                await self._first_request()
            self.unmatched.count("WEBSOCKET", path, self.clock())
            route = self.routes.default
            if route is None and self._refuse_unmatched:
                if (await receive())["type"] == "websocket.connect":
                    await send({"type": "websocket.close", "code": 1008, "reason": "not found"})
                return
        if route is None or route.exempt:
            await self.app(scope, receive, send)
            return
        if not self._started:
            await self._first_request()
        now = self.clock()
        decision = Decision(
            self.request_ids(), route.name, self.identity.resolve(scope), self.enforce
        )
        scope.setdefault("state", {})["guardrail"] = decision
        if self.seeds is not None:
            decision.watermark = self.seeds.for_subject(decision.subject)
            scope = self.seeds.give(scope, decision.watermark)
        await self._decide(route, decision, now)
        if decision.action == LIMIT:
            self._record(scope, decision, now, 403 if self.enforce else 101)
            if self.enforce:
                message = await receive()
                if message["type"] == "websocket.connect":
                    await send(
                        {"type": "websocket.close", "code": 1008, "reason": "rate limit exceeded"}
                    )
                return
        else:
            self.metrics.decided(decision)  # a refusal was counted as it was recorded
        await self.app(scope, receive, send)

    # -- pipeline steps --------------------------------------------------------------------

    async def _early(
        self,
        route: CompiledRoute,
        decision: Decision,
        scope: Scope,
        send: Send,
        now: float,
        headers: list[tuple[bytes, bytes]],
    ) -> tuple[bool, bool]:
        """Answer, before the body is read, what is already known to be refused: a principal
        in the block band, or the challenge band without a clearance (403), a subject over one
        of the route's request limits (429). See ``early.py``. Returns whether it answered,
        and whether a clearance was checked (and counted) on the way."""
        cleared = False
        subject = decision.subject
        known = None
        risk = self.risk
        # allow: subjects are never escalated, whatever their principal's band
        if now < self.bands.latest and risk is not None and not risk.exempt(subject):
            known = self.bands.band(principal_of(subject), now)
        if known is not None and known.threshold is not None:
            decision.action, decision.score = known.threshold.action, known.score
            decision.assessment = known  # the one that put it there: its signals for the record
            if decision.action == BLOCK or not await self.desk.cleared(scope, decision, now):
                self._record(scope, decision, now, 403)  # before sending: the client may go
                await self.desk.refuse(scope, send, decision, now, _unread(scope, headers))
                return True, False
            decision.action, decision.score, decision.assessment = ALLOW, 0.0, None
            cleared = True  # assessed below, with the body
        refused = self.refused
        refusing = refused.refusing(route, subject, now) if now < refused.latest else None
        if refusing is None:
            return False, cleared
        lim, state = refusing
        outcome = Outcome(False, (state,))
        decision.action, decision.outcome, decision.limits = LIMIT, outcome, (lim,)
        hit = decision.limit
        assert hit is not None
        headers = _unread(scope, headers) + ratelimit_headers(
            route.requests_policy, (lim,), outcome
        )
        self._record(scope, decision, now, 429)
        await send_limited(send, hit=hit, request_id=decision.request_id, headers=headers)
        return True, cleared

    async def _timed_out(
        self,
        route: CompiledRoute,
        decision: Decision,
        scope: Scope,
        send: Send,
        now: float,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        """The body did not arrive in time: 408, and the connection closed. The risk engine
        still looks at the request (without its body; nothing is committed), so that a
        principal in a refusing band is refused before the body of its next requests even when
        it stalls every one. The request still costs its route's request buckets (nothing was
        reserved of its token budgets): a subject that stalls body after body runs out of them
        like any other, and its next requests are refused before their body."""
        if self.risk is not None:
            await self._assess(route, decision, scope, now)
        await self._decide(route, decision, now)
        outcome = decision.outcome
        if outcome is not None and not outcome.allowed and not decision.degraded:
            self.refused.learn(route, decision.subject, outcome, now)
        decision.action, decision.tier = TIMEOUT, None
        self._record(scope, decision, now, 408)
        await send_timeout(
            send, waited=route.inspect_timeout, request_id=decision.request_id, headers=headers
        )

    async def _assess(
        self, route: CompiledRoute, decision: Decision, scope: Scope, now: float
    ) -> Assessment | None:
        """Score the request; the band it falls in (after hysteresis) sets the action."""
        risk = self.risk
        if risk is None or risk.exempt(decision.subject):
            return None
        try:
            assessment = await risk.assess(route, decision.subject, scope, decision.request, now)
        except StorageError as exc:  # fail_closed: nothing can score it
            self._warn_storage(exc, now)
            decision.storage_error = True
            return None
        decision.score, decision.assessment = assessment.score, assessment
        if assessment.degraded:
            decision.degraded = True
        threshold = assessment.threshold
        if threshold is not None:
            decision.action, decision.tier = threshold.action, threshold.tier
        if (
            (threshold is not None or now < self.bands.latest)
            and self.enforce
            and not assessment.degraded
        ):
            self.bands.learn(assessment, now)
        return assessment

    async def _commit(self, assessment: Assessment, now: float, admitted: bool = True) -> None:
        # The decision is already made from what was read; a write that fails loses one
        # request's evidence, which is no reason to refuse the request.
        try:
            await self.risk.commit(assessment, admitted)  # type: ignore[union-attr]
        except StorageError as exc:
            self._warn_storage(exc, now)

    async def _refused(self, assessment: Assessment | None, now: float) -> None:
        # After the answer is sent: a 4xx feeds the refusals signal, off the hot path.
        if assessment is None or self.risk is None:
            return
        try:
            await self.risk.refused(assessment, now)
        except StorageError as exc:
            self._warn_storage(exc, now)

    async def _decide(
        self,
        route: CompiledRoute,
        decision: Decision,
        now: float,
        tier: CompiledTier | None = None,
        assessment: Assessment | None = None,
        reserved: Reservation | None = None,
    ) -> Budget | None:
        """Charge every bucket of the route (and of the subject's tier) at once, ``tokens``
        ``reserved`` against the token limits; a refusal makes the action ``limit``. The risk
        engine's write goes out alongside (in Redis, for a principal already there), or after
        the charge: only an admitted request creates risk state. Returns the request's hold on
        its token budgets.

        A storage failure follows on_storage_error: the local fallback decides (fail_open), or
        nothing can, and the request is refused with ``storage_error`` set (fail_closed).
        """
        subject = decision.subject
        tokens = 0 if reserved is None else reserved.tokens
        charges = route.charges(subject)
        limits: tuple[CompiledLimit, ...] = route.charged
        held: list[BucketCharge] | None = None  # the token charges, in the order they go out
        if tokens and route.metered:
            held = token_charges(route.metered, subject, tokens)
            charges += held
            limits = (*limits, *route.metered)
        # the route's limits first, then the tier's: headers slice the route's off the front
        if tier is not None:
            if tier.charged:
                charges += [lim.charge(subject) for lim in tier.charged]
                limits = (*limits, *tier.charged)
            if tokens and tier.metered:
                more = token_charges(tier.metered, subject, tokens)
                charges += more
                held = [*(held or ()), *more]
                limits = (*limits, *tier.metered)
        commit = None
        deferred = None  # written once the charge is known
        if assessment is not None and (
            assessment.update is not None or assessment.template is not None
        ):
            if not charges:
                await self._commit(assessment, now)
            elif assessment.remote and assessment.known:
                # Redis, a principal already there: the risk write goes out alongside the
                # bucket charge, so the two share the request's second round trip.
                commit = asyncio.ensure_future(self._commit(assessment, now))
            else:
                deferred = assessment
        if not charges:
            return None
        storage = self.storage
        outcome = None
        try:
            try:
                if type(storage) is MemoryStorage:  # the embedded default: no coroutine
                    outcome = storage.charge_now(charges, now)
                else:
                    outcome = await storage.charge(charges, now)
            except StorageError as exc:
                self._warn_storage(exc, now)
                if self.fallback is None:
                    decision.action, decision.storage_error = LIMIT, True
                    if deferred is not None:
                        await self._commit(deferred, now, admitted=False)
                    return None
                decision.degraded = True
                storage = self.fallback
                outcome = await storage.charge(charges, now)
        finally:
            if commit is not None or (deferred is not None and outcome is not None):
                try:
                    if commit is not None:
                        await commit
                    elif deferred is not None and outcome is not None:
                        await self._commit(deferred, now, outcome.allowed)
                except BaseException:  # cancelled after the charge: no one will settle it
                    if held and outcome is not None and outcome.allowed:
                        given_back = [c._replace(cost=-tokens) for c in held]
                        self.settlements.settle(storage, given_back, now)
                    raise
        decision.outcome, decision.limits, decision.tokens = outcome, limits, tokens
        if not outcome.allowed:
            decision.action = LIMIT
            return None
        if not held or reserved is None:
            return None
        self.metrics.tokens("reserved", decision.route, tokens)
        return Budget(
            storage,
            held,
            tokens,
            reserved.prompt,
            reserved.open_ended,
            self._budget_error,
            self.settlements.retry,
        )

    def _warn_storage(self, exc: StorageError, now: float) -> None:
        self.metrics.storage_error(isinstance(exc, BreakerOpen))
        if now - self._storage_warned_at >= 10.0:
            self._storage_warned_at = now
            policy = self._policy.on_storage_error
            logger.warning(
                "guardrail: storage error, applying on_storage_error=%s: %s", policy, exc
            )

    def _record(
        self,
        scope: Scope,
        decision: Decision,
        now: float,
        status: int,
        receipt: dict[str, Any] | None = None,
    ) -> None:
        record = decision_record(self._policy, scope, decision, now, status)
        self.metrics.decided(decision)
        if receipt is not None:
            # The body as served (provenance routes): never folded into a count of refusals,
            # which observe mode's served refusals would be.
            record["receipt"] = receipt
            self.refusals.emit(record, None, now)
            return
        self.refusals.emit(record, refusal_key(decision, status), now)

    async def _serve_metrics(self, scope: Scope, send: Send) -> None:
        """``metrics.path``: served here, before any route (it is never limited nor recorded)."""
        if not self._started:
            await self._first_request()
        client = self.identity.resolve(scope).ip
        await self.metrics.serve(scope, send, client, self.request_ids())


def _provenance(
    policy: Policy, clock: Clock, storage: Storage
) -> tuple[Recorder | None, frozenset[str]]:
    """The recorder and the routes it records, when ``provenance.enabled``; its index in
    Redis with a Redis storage, unless ``provenance.path`` asks for files."""
    conf = policy.provenance
    names = captured_routes(policy)
    if not conf.enabled:
        return None, names
    key = resolve_secret(conf.key) if conf.key is not None else b""
    sketcher = Sketcher(key)
    store = None
    if "path" not in conf.model_fields_set and not isinstance(storage, MemoryStorage):
        from guardrail.provenance.index_redis import writer_for

        store = writer_for(storage, sketcher, conf.max_entries, conf.retention, clock)
    recorder = Recorder(
        conf.path,
        capacity=conf.max_entries,
        retention=conf.retention,
        save_every=conf.save_every,
        sketcher=sketcher,
        clock=clock,
        store=store,
    )
    return recorder, names


def _unread(scope: Scope, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers of an answer given without reading a body the request declares: the
    connection is closed after it, or the server would hold what arrived of the body (uvicorn:
    up to 64 KiB) for as long as a stalling client keeps the connection open."""
    if declares_body(scope):
        return [*headers, (b"connection", b"close")]
    return headers
