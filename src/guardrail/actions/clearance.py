"""Clearances: what passing a challenge earns, and what a later request shows to skip one.

A clearance is signed with itsdangerous (not a token format of our own) under a list of
secrets: the first signs, every one verifies, so a secret is rotated by putting the new one
first and dropping the old one after ``ttl``. It carries its own id, its expiry, and a keyed
digest of what ``clearance.bind`` names (the subject, subnet, user agent or IP it was issued
to): never those values, so a clearance read off a wire or a log says nothing about its
holder. Its uses are counted server-side, by id, against ``max_requests`` (the caller's store).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as random
from collections.abc import Sequence
from typing import NamedTuple

from itsdangerous import BadSignature, URLSafeSerializer
from starlette.types import Scope

from guardrail.errors import ClearanceError
from guardrail.identity import Subject
from guardrail.policy import Clearance

_SALT = "guardrail.clearance"


class Claims(NamedTuple):
    id: str
    expires_at: float


class ClearanceSigner:
    def __init__(self, keys: Sequence[bytes], config: Clearance) -> None:
        if not keys:
            raise ValueError("a clearance needs at least one secret")
        # itsdangerous signs with the last key of its list and verifies with any: newest last
        self._serializer = URLSafeSerializer(list(reversed(keys)), salt=_SALT)
        # one binding key per secret: a clearance issued before a rotation still matches
        self._binders = [
            hmac.new(key, b"guardrail.clearance.bind", hashlib.sha256).digest() for key in keys
        ]
        self.config = config

    def _bindings(self, subject: Subject, scope: Scope) -> list[str]:
        """The keyed digests of what ``bind`` names for this request, one per secret."""
        values = []
        for name in self.config.bind:
            if name == "subject":
                values.append(subject.account or subject.api_key or subject.ip)
            elif name == "subnet":
                values.append(subject.subnet)
            elif name == "ip":
                values.append(subject.ip)
            else:  # user_agent
                agent = next((v for k, v in scope.get("headers") or () if k == b"user-agent"), b"")
                values.append(agent.decode("latin-1"))
        pairs = zip(self.config.bind, values, strict=True)
        text = "\x00".join(f"{name}={value}" for name, value in pairs).encode()
        return [hmac.new(key, text, hashlib.sha256).hexdigest()[:32] for key in self._binders]

    def issue(self, subject: Subject, scope: Scope, now: float) -> tuple[str, Claims]:
        """A clearance for the client of this request."""
        claims = Claims(random.token_urlsafe(12), now + self.config.ttl)
        binding = self._bindings(subject, scope)[0]
        token = self._serializer.dumps({"id": claims.id, "exp": claims.expires_at, "b": binding})
        return token, claims

    def verify(self, token: str, subject: Subject, scope: Scope, now: float) -> Claims:
        """The claims of a clearance good for this request; ClearanceError says why not."""
        try:
            payload = self._serializer.loads(token)
        except BadSignature as exc:
            raise ClearanceError("not a clearance this server signed") from exc
        if not isinstance(payload, dict):
            raise ClearanceError("not a clearance this server signed")
        clearance_id, expires_at, bound = payload.get("id"), payload.get("exp"), payload.get("b")
        if not isinstance(clearance_id, str) or not isinstance(expires_at, int | float):
            raise ClearanceError("not a clearance this server signed")
        if now >= expires_at:
            raise ClearanceError("expired")
        if not isinstance(bound, str) or not any(
            hmac.compare_digest(bound, binding) for binding in self._bindings(subject, scope)
        ):
            raise ClearanceError("issued to another client (" + ", ".join(self.config.bind) + ")")
        return Claims(clearance_id, float(expires_at))
