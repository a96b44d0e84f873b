"""guardrail's own endpoints under ``challenges.prefix`` (the verify endpoint, the challenge
page and its script), the clearances a challenged request may show instead of a challenge, and
the 403 (challenge or block) it gets without one.

The verify endpoint has buckets of its own (``challenges.verify_limits``, per ip and per subnet
by default), charged before its body is read: every answer costs a store read, and one to a
CAPTCHA a siteverify call.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from starlette.requests import cookie_parser
from starlette.types import Receive, Scope, Send

from guardrail.actions import challenge, verify
from guardrail.actions.block import send_blocked
from guardrail.actions.limit import send_limited, send_unavailable
from guardrail.actions.problem import send_problem
from guardrail.actions.timeout import send_timeout
from guardrail.actions.verify import Answer
from guardrail.audit import format_ts
from guardrail.decision import LIMIT, Decision
from guardrail.errors import ClearanceError, StorageError
from guardrail.inspection import BodyTimeout, read_body
from guardrail.limits import compile_limit
from guardrail.origin import Origin, origin_of
from guardrail.paths import home, root_of
from guardrail.signals.engine import principal_of

if TYPE_CHECKING:
    from guardrail.middleware import Guardrail

#: Seconds an answer (a small form) may take to arrive: a stalled one must not hold on.
ANSWER_WITHIN = 10.0


class ChallengeDesk:
    """Answers what is addressed to guardrail itself, with the middleware's stores, signer,
    audit trail and risk engine."""

    def __init__(self, guardrail: Guardrail) -> None:
        self.g = guardrail
        # Bucket names: a route's are "<route>:<n>" and a tier's "tier:<name>#<n>"; these
        # have no colon, so they are neither.
        self.verify_limits = tuple(
            compile_limit(f"verify#{index}", limit, f"verify-{limit.per}")
            for index, limit in enumerate(guardrail._policy.challenges.verify_limits)
        )

    async def cleared(self, scope: Scope, decision: Decision, now: float) -> bool:
        """Has the request a clearance, good for its client and not used up: one it carries,
        or its API key's or account's, granted server-side when it passed a challenge (so an
        API client's plain retry passes after a person solved the challenge in a browser)?"""
        token = _clearance(scope)
        subject = decision.subject
        # An API key's or account's uses are counted once, whichever way it shows its pass
        keyed = subject.api_key is not None or subject.account is not None
        name = "p:" + principal_of(subject)
        try:
            if token is not None:
                claims = self.g.clearances.verify(token, subject, scope, now)
                counted = name if keyed else claims.id
                uses = await self.g.challenges.use(counted, claims.expires_at, now)
            elif keyed:
                expires_at = await self.g.challenges.granted(name, now)
                if expires_at is None:
                    return False
                uses = await self.g.challenges.use(name, expires_at, now)
            else:
                return False
        except ClearanceError:
            return False
        except StorageError as exc:
            self.g._warn_storage(exc, now)
            return False
        return uses <= self.g._policy.challenges.clearance.max_requests

    async def refuse(
        self,
        scope: Scope,
        send: Send,
        decision: Decision,
        now: float,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        """Answer a challenge or a block (403) in place of the app."""
        if decision.action == "block":
            await send_blocked(send, request_id=decision.request_id, headers=headers)
            return
        g = self.g
        root = root_of(scope)
        issued = challenge.issue(g._policy.challenges, g.secret, now, root)
        try:
            issued = await verify.keep(g.challenges, issued, principal_of(decision.subject), now)
        except StorageError as exc:  # the client can retry for another
            g._warn_storage(exc, now)
        g.metrics.challenge("issued", g.widget[0].name if g.widget else "pow")
        origin = self._origin(scope)
        await challenge.send_challenge(
            send,
            scope,
            challenge=issued,
            prefix=root + g._policy.challenges.prefix,
            request_id=decision.request_id,
            headers=headers,
            widget=g.widget,
            origin=origin,
            site=self._site(origin),
        )

    def _origin(self, scope: Scope) -> Origin | None:
        """The origin the client reached, through the proxies identity trusts."""
        proxied = self.g.identity.peer_trusted(scope)
        return origin_of(scope, proxied=proxied, header=self.g._policy.identity.client_ip.header)

    def _hostname(self, scope: Scope) -> str:
        """The host the client reached, without its port: where a captcha token must have been
        solved. Behind a proxy that sends the app an internal name, the forwarded one."""
        origin = self._origin(scope)
        return origin.hostname if origin is not None else ""

    def _site(self, origin: Origin | None) -> str | None:
        """The name the challenge page gives the site: the policy's, else the host reached."""
        named = self.g._policy.challenges.site_name
        return named or (origin.hostname if origin is not None else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """guardrail's own endpoints under ``challenges.prefix``: the verify endpoint, the
        challenge page and its script. ``path``: the one the app routes on (``paths``)."""
        name = path[len(self.g._prefix) :]
        if name == "verify":
            await self.verify(scope, receive, send)
            return
        request_id = self.g.request_ids()
        headers = [(b"guardrail-request-id", request_id.encode())]
        if scope["method"] in ("GET", "HEAD") and name == "pow.js":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/javascript; charset=utf-8"),
                        (b"content-length", str(len(challenge.POW_JS)).encode()),
                        (b"cache-control", b"public, max-age=3600"),
                        *headers,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": challenge.POW_JS})
            return
        if scope["method"] in ("GET", "HEAD") and name.startswith("challenge/"):
            challenge_id = name.removeprefix("challenge/")
            if verify.CHALLENGE_ID.fullmatch(challenge_id):
                root = root_of(scope)
                config = self.g._policy.challenges
                issued = challenge.of(config, self.g.secret, challenge_id, 0.0, root)
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                back = (query.get("redirect") or [home(scope)])[0]
                prefix = root + config.prefix
                widget = self.g.widget
                site = self._site(self._origin(scope))
                body = challenge.page(issued, prefix, back, request_id, widget, site=site)
                headers.append((b"cache-control", b"no-store"))
                provider = widget[0] if widget else None
                await challenge.send_page(send, body, 200, headers, widget=provider)
                return
        await send_problem(
            send,
            404,
            problem="not-found",
            title="Not Found",
            detail=f"no such guardrail endpoint: {scope['path']}",
            error_type="invalid_request_error",
            request_id=request_id,
            headers=headers,
        )

    async def verify(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST {prefix}/verify``: an answered challenge becomes a clearance."""
        now = self.g.clock()
        request_id = self.g.request_ids()
        headers = [(b"guardrail-request-id", request_id.encode()), (b"cache-control", b"no-store")]
        decision = Decision(request_id, "challenge", self.g.identity.resolve(scope), self.g.enforce)
        if self.verify_limits and not await self._admitted(scope, send, decision, now, headers):
            return
        try:
            raw, _ = await read_body(receive, verify.MAX_BODY, self.g.deadlines, ANSWER_WITHIN)
        except BodyTimeout:
            await send_timeout(send, waited=ANSWER_WITHIN, request_id=request_id, headers=headers)
            return
        try:
            if scope["method"] != "POST":
                raise verify.AnswerError("POST the answer to a challenge here")
            if raw is None:
                raise verify.AnswerError(f"the answer is larger than {verify.MAX_BODY} bytes")
            content_type = next(
                (v.decode("latin-1") for k, v in scope["headers"] if k == b"content-type"), ""
            )
            answer = verify.parse_answer(raw, content_type.lower())
        except verify.AnswerError as exc:
            await send_problem(
                send,
                400,
                problem="invalid-answer",
                title="Bad Request",
                detail=str(exc),
                error_type="invalid_request_error",
                request_id=request_id,
                headers=headers,
            )
            return
        subject = decision.subject
        try:
            token, claims = await verify.check(
                self.g.challenges,
                self.g.clearances,
                answer,
                principal=principal_of(subject),
                subject=subject,
                scope=scope,
                now=now,
                siteverify=self.g.siteverify,
                host=self._hostname(scope),
            )
        except verify.ChallengeUnknown as exc:
            await send_problem(
                send,
                404,
                problem="challenge-not-found",
                title="Not Found",
                detail=f"{exc}: retry the original request for a new challenge",
                error_type="challenge_not_found",
                request_id=request_id,
                headers=headers,
            )
            return
        except verify.AnswerUnavailable as exc:
            await send_problem(
                send,
                503,
                problem="challenge-unavailable",
                title="Service Unavailable",
                detail=str(exc),
                error_type="service_unavailable",
                request_id=request_id,
                headers=[(b"retry-after", b"5"), *headers],
            )
            return
        except verify.ChallengeFailed as exc:
            self.g.metrics.challenge("failed", self._kind(answer))
            decision.action = "challenge_failed"
            self.g._record(scope, decision, now, 403)
            if self.g.risk is not None:
                try:
                    await self.g.risk.challenge_failed(subject, now)
                except StorageError as storage_exc:
                    self.g._warn_storage(storage_exc, now)
            await send_problem(
                send,
                403,
                problem="challenge-failed",
                title="Forbidden",
                detail=f"{exc}: retry the original request for a new challenge",
                error_type="challenge_failed",
                request_id=request_id,
                headers=headers,
            )
            return
        except StorageError as exc:
            self.g._warn_storage(exc, now)
            await send_unavailable(send, request_id=request_id, headers=headers)
            return
        self.g.metrics.challenge("passed", self._kind(answer))
        decision.action = "challenge_passed"
        if self.g.risk is not None:
            try:
                await self.g.risk.challenge_passed(subject, now)
            except StorageError as exc:
                self.g._warn_storage(exc, now)
        if subject.api_key is not None or subject.account is not None:
            try:
                await self.g.challenges.grant("p:" + principal_of(subject), claims.expires_at, now)
            except StorageError as exc:  # the clearance itself still works
                self.g._warn_storage(exc, now)
        limit = self.g._policy.challenges.clearance.max_requests
        if answer.browser:
            self.g._record(scope, decision, now, 303)
            # the client's scheme, not the hop's: behind a proxy that terminates TLS the app
            # speaks http, and the cookie of an https site must still be Secure and __Host-
            origin = self._origin(scope)
            secure = origin is not None and origin.scheme == "https"
            name = ("__Host-" if secure else "") + verify.COOKIE
            cookie = f"{name}={token}; Path=/; Max-Age={int(claims.expires_at - now)}; HttpOnly"
            cookie += "; SameSite=Lax" + ("; Secure" if secure else "")
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [
                        (b"location", (answer.redirect or home(scope)).encode()),
                        (b"set-cookie", cookie.encode()),
                        (b"content-length", b"0"),
                        *headers,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        self.g._record(scope, decision, now, 200)
        expires_at = format_ts(claims.expires_at)
        body = {"clearance": token, "expires_at": expires_at, "max_requests": limit}
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _kind(self, answer: Answer) -> str:
        """What an answer answered: the CAPTCHA offered, or the proof of work."""
        widget = self.g.widget
        return widget[0].name if answer.captcha is not None and widget else "pow"

    async def _admitted(
        self,
        scope: Scope,
        send: Send,
        decision: Decision,
        now: float,
        headers: list[tuple[bytes, bytes]],
    ) -> bool:
        """Charge the verify endpoint's buckets; False once a refusal (429, or 503 with no
        store to decide) is sent."""
        g = self.g
        limits = self.verify_limits
        charges = [limit.charge(decision.subject) for limit in limits]
        try:
            outcome = await g.storage.charge(charges, now)
        except StorageError as exc:
            g._warn_storage(exc, now)
            if g.fallback is None:
                await send_unavailable(send, request_id=decision.request_id, headers=headers)
                return False
            decision.degraded = True
            outcome = await g.fallback.charge(charges, now)
        if outcome.allowed:
            return True
        decision.action, decision.outcome, decision.limits = LIMIT, outcome, limits
        hit = decision.limit
        assert hit is not None  # a refusal always comes from a bucket
        g._record(scope, decision, now, 429)
        await send_limited(send, hit=hit, request_id=decision.request_id, headers=headers)
        return False


def _clearance(scope: Scope) -> str | None:
    """The clearance a request carries: the Guardrail-Clearance header, else the cookie."""
    cookies = None
    for name, value in scope.get("headers") or ():
        if name == verify.HEADER:
            return str(value.decode("latin-1"))
        if name == b"cookie":
            cookies = value.decode("latin-1")
    if cookies is None:
        return None
    parsed = cookie_parser(cookies)
    return parsed.get("__Host-" + verify.COOKIE) or parsed.get(verify.COOKIE)
