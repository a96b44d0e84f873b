"""The verify endpoint (``POST {prefix}/verify``): an answered challenge becomes a clearance.

A browser posts the challenge page's form and gets the clearance as a cookie and a 303 to
``redirect``; an API client posts JSON and gets ``{clearance, expires_at, max_requests}``.
``redirect`` is a relative path or nothing: never a URL that could leave the site.

Only a challenge that exists and was issued to the sender's principal can fail (and count
against it): an answer naming any other id is ``ChallengeUnknown``, which spends nothing,
counts against no one and asks nothing of siteverify. Otherwise anyone could post made-up
ids as someone else (a cross-site form as a keyless IP, say) and fail challenges in their name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Scope

from guardrail.actions import pow
from guardrail.actions.captcha import Siteverify, SiteverifyUnavailable
from guardrail.actions.challenge import Challenge, relative
from guardrail.actions.clearance import Claims, ClearanceSigner
from guardrail.actions.hcaptcha import HCAPTCHA
from guardrail.actions.turnstile import TURNSTILE
from guardrail.backends.challenges import ChallengeStore
from guardrail.errors import GuardrailError
from guardrail.identity import Subject

#: An answer is a few short fields; anything longer is not one.
MAX_BODY = 8192
COOKIE = "guardrail_clearance"
#: What ``challenge.issue`` makes (token_urlsafe, 24 characters), with room to spare.
CHALLENGE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
HEADER = b"guardrail-clearance"


class AnswerError(GuardrailError):
    """A verify request that is not a well-formed answer (400)."""


@dataclass(frozen=True, slots=True)
class Answer:
    challenge_id: str
    nonce: str | None
    captcha: str | None  # h-captcha-response or cf-turnstile-response
    redirect: str
    browser: bool  # posted as a form: answer with a cookie and a redirect


def parse_answer(raw: bytes, content_type: str) -> Answer:
    fields: dict[str, Any]
    if content_type.startswith("application/json"):
        try:
            fields = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise AnswerError("the body is not JSON") from exc
        if not isinstance(fields, dict):
            raise AnswerError("the body is not a JSON object")
        browser = False
    elif content_type.startswith("application/x-www-form-urlencoded"):
        try:
            fields = dict(parse_qsl(raw.decode("utf-8"), max_num_fields=8, strict_parsing=False))
        except (UnicodeDecodeError, ValueError) as exc:
            raise AnswerError("the form is not UTF-8 fields") from exc
        browser = True
    else:
        raise AnswerError("send application/json or a form (application/x-www-form-urlencoded)")
    challenge_id = fields.get("challenge_id")
    if not isinstance(challenge_id, str) or not CHALLENGE_ID.fullmatch(challenge_id):
        raise AnswerError("challenge_id: expected the id of the challenge answered")
    # a widget's field is in the form (empty) whenever the widget is on the page
    nonce = fields.get("nonce") or None
    captcha = fields.get(HCAPTCHA.field) or fields.get(TURNSTILE.field) or None
    if nonce is not None and not isinstance(nonce, str):
        nonce = str(nonce) if isinstance(nonce, int) and not isinstance(nonce, bool) else None
    if captcha is not None and not isinstance(captcha, str):
        raise AnswerError("the CAPTCHA's response: expected a string")
    if nonce is None and captcha is None:
        raise AnswerError(
            f"expected a nonce (proof of work), an {HCAPTCHA.field} or a {TURNSTILE.field}"
        )
    return Answer(challenge_id, nonce, captcha, safe_redirect(fields.get("redirect")), browser)


def safe_redirect(value: object) -> str:
    """``redirect`` as posted: nothing ("": the app's root) or a path on this site
    (``challenge.relative``)."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or relative(value) is None:
        raise AnswerError(f"redirect: expected a relative path such as /chat, got {value!r:.80}")
    return value


@dataclass(frozen=True, slots=True)
class Record:
    """What the store keeps of an issued challenge, under the principal it was issued to."""

    challenge_id: str
    seed: str
    difficulty: int
    expires_at: float

    def dumps(self) -> bytes:
        fields = [self.challenge_id, self.seed, self.difficulty, self.expires_at]
        return json.dumps(fields).encode()

    @classmethod
    def loads(cls, raw: bytes) -> Record:
        challenge_id, seed, difficulty, expires_at = json.loads(raw)
        return cls(str(challenge_id), str(seed), int(difficulty), float(expires_at))


async def keep(store: ChallengeStore, issued: Challenge, principal: str, now: float) -> Challenge:
    """The challenge to show ``principal``: its live one if it has one, else ``issued``, kept."""
    record = Record(issued.id, issued.seed, issued.difficulty, issued.expires_at)
    live = _record(await store.put(principal, record.dumps(), issued.expires_at, now))
    if live is None or live.challenge_id == issued.id:
        return issued
    return replace(
        issued,
        id=live.challenge_id,
        url=issued.url.removesuffix(issued.id) + live.challenge_id,
        expires_at=live.expires_at,
        difficulty=live.difficulty,
        seed=live.seed,
    )


async def check(
    store: ChallengeStore,
    signer: ClearanceSigner,
    answer: Answer,
    *,
    principal: str,
    subject: Subject,
    scope: Scope,
    now: float,
    siteverify: Siteverify | None = None,
    host: str = "",
) -> tuple[str, Claims]:
    """The clearance an answer earns; ChallengeUnknown (404) or ChallengeFailed (403) says why
    not. The id and its principal come first: an answer to no challenge of the sender's spends
    nothing and costs no siteverify call."""
    # Only the sender's own challenge is looked at: another principal's id is not found, and
    # no one can spend or fail a challenge in someone else's name.
    record = _record(await store.peek(principal, now))
    if record is None or record.challenge_id != answer.challenge_id:
        raise ChallengeUnknown(UNKNOWN)
    if answer.captcha is not None:
        # Asked of the CAPTCHA before the id is spent: when siteverify is down and on_error
        # is pow, the same challenge can still be answered with a proof of work.
        if siteverify is None:
            raise ChallengeFailed("this challenge takes a proof of work (nonce)")
        try:
            verdict = await siteverify.check(answer.captcha, remoteip=subject.ip, host=host)
        except SiteverifyUnavailable as exc:
            # The provider's outage is no failure of the client's: nothing is spent or counted.
            on_error = siteverify.config.on_error
            if on_error == "pow":
                raise AnswerUnavailable(f"{exc}: answer with the proof of work instead") from exc
            if on_error == "closed":
                raise AnswerUnavailable(f"{exc}: try again later") from exc
            verdict = None  # open: let it pass
        if verdict is not None and not verdict.success:
            await store.take(principal, now)  # spent on a wrong answer
            title = siteverify.provider.title
            raise ChallengeFailed(f"{title} refused the answer: {verdict.reason}")
    elif answer.nonce is None:
        raise ChallengeFailed("expected a nonce or an h-captcha-response")
    elif not pow.verify(record.seed, answer.nonce, record.difficulty):
        # Checked on the record read, before it is taken: a wrong nonce from a client that
        # shares the principal (a NAT, an IPv6 /64) must not burn the challenge for the others.
        raise ChallengeFailed("wrong nonce")
    taken = _record(await store.take(principal, now))
    if taken != record:
        # answered meanwhile, or expired (a newer one taken here is lost: the next request
        # of its principal is shown another)
        raise ChallengeUnknown(UNKNOWN)
    return signer.issue(subject, scope, now)


UNKNOWN = "unknown, expired or already answered challenge"


def _record(raw: bytes | None) -> Record | None:
    if raw is None:
        return None
    try:
        return Record.loads(raw)
    except (ValueError, TypeError):  # not a record this version wrote: no challenge
        return None


class AnswerUnavailable(GuardrailError):
    """siteverify is down or slow and ``on_error`` is pow or closed (503): the answer can be
    neither passed nor failed; nothing is spent or counted."""


class ChallengeUnknown(GuardrailError):
    """An answer naming no live challenge of the sender's (404): nothing spent or counted."""


class ChallengeFailed(GuardrailError):
    """An answer that does not pass (403): recorded as challenge_failed."""
