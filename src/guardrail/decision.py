"""What guardrail decided about one request: exposed to the app and written to the audit log."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from guardrail.identity import Subject
from guardrail.inspection import OpenAIRequest

ALLOW = "allow"
LIMIT = "limit"


@dataclass(frozen=True, slots=True)
class LimitHit:
    """The bucket that decided (refused, or came closest to refusing)."""

    per: str
    rate: str
    remaining: int
    retry_after: int  # whole seconds, rounded up; 0 when admitted

    def as_dict(self) -> dict[str, Any]:
        return {
            "per": self.per,
            "rate": self.rate,
            "remaining": self.remaining,
            "retry_after": self.retry_after,
        }


@dataclass(slots=True)
class Decision:
    """``scope["state"]["guardrail"]`` (Starlette: ``request.state.guardrail``)."""

    request_id: str
    route: str
    subject: Subject
    action: str = ALLOW
    tier: str | None = None
    score: float = 0.0
    signals: dict[str, float] = field(default_factory=dict)
    limit: LimitHit | None = None
    enforced: bool = True  # False in mode observe: the action was recorded, not applied
    degraded: bool = False  # the shared storage failed and a local fallback decided
    storage_error: bool = False  # the storage failed and nothing could decide (fail_closed)
    request: OpenAIRequest | None = None  # the inspected body, on routes with `inspect: openai`


class RequestIds:
    """Unique, cheap request ids: a random per-process prefix and a counter.

    uuid4 costs a syscall per request; ids need to be unique, not secret.
    """

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):010x}"
