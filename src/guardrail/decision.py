"""What guardrail decided about one request: exposed to the app and written to the audit log."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from guardrail.backends.base import Outcome
from guardrail.identity import Subject
from guardrail.inspection import OpenAIRequest, parse_request
from guardrail.limits import CompiledLimit, LimitHit, limit_hit
from guardrail.signals.engine import Assessment

if TYPE_CHECKING:
    from guardrail.metering import Meter
    from guardrail.provenance.watermark import WatermarkSeed

ALLOW = "allow"
LIMIT = "limit"
THROTTLE = "throttle"
CHALLENGE = "challenge"
BLOCK = "block"
TIMEOUT = "timeout"  # the body did not arrive within the route's inspect_timeout (408)


@dataclass(slots=True)
class Decision:
    """``scope["state"]["guardrail"]`` (Starlette: ``request.state.guardrail``)."""

    request_id: str
    route: str
    subject: Subject
    enforced: bool = True  # False in mode observe: the action was recorded, not applied
    action: str = ALLOW
    tier: str | None = None
    score: float = 0.0
    degraded: bool = False  # the shared storage failed and a local fallback decided
    storage_error: bool = False  # the storage failed and nothing could decide (fail_closed)
    outcome: Outcome | None = None  # the storage's verdict over the route's buckets
    limits: tuple[CompiledLimit, ...] = ()  # the buckets that verdict is about
    tokens: int = 0  # the LLM tokens reserved against the token limits among them
    used: int | None = None  # the tokens the response was settled to (None: unknown)
    assessment: Assessment | None = None  # the risk engine's, when it scored the request
    watermark: WatermarkSeed | None = None  # provenance.watermark: the subject's seed
    _request: OpenAIRequest | None = field(default=None, init=False, repr=False)
    _unparsed: tuple[bytes, Meter] | None = field(default=None, init=False, repr=False)

    @property
    def request(self) -> OpenAIRequest | None:
        """The inspected body, on routes with ``inspect: openai``. Parsed on the first read:
        with neither a risk engine, nor token limits, nor a tier that rewrites, nothing on the
        request path reads it, and the parse was a tenth of what guardrail cost a request."""
        unparsed = self._unparsed
        if unparsed is not None:
            self._unparsed = None
            self._request = parse_request(*unparsed)
        return self._request

    @request.setter
    def request(self, value: OpenAIRequest | None) -> None:
        self._request, self._unparsed = value, None

    def inspected(self, raw: bytes, meter: Meter) -> None:
        """The body read whole: :attr:`request` is ``parse_request(raw, meter)``."""
        self._request, self._unparsed = None, (raw, meter)

    @property
    def watermark_seed(self) -> int | None:
        """The subject's seed for a model-side watermark (``provenance.watermark``), or None."""
        return None if self.watermark is None else self.watermark.seed

    @property
    def signals(self) -> dict[str, float]:
        """Each risk signal's contribution to ``score`` in points, largest first (computed on
        demand: most requests are never recorded)."""
        return {} if self.assessment is None else self.assessment.signals

    @property
    def limit(self) -> LimitHit | None:
        """The bucket that decided; computed on demand, since most requests never ask."""
        return None if self.outcome is None else limit_hit(self.limits, self.outcome, self.tokens)


class RequestIds:
    """Unique, cheap request ids: a random per-process prefix and a counter.

    uuid4 costs a syscall per request; ids need to be unique, not secret.
    """

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):010x}"
