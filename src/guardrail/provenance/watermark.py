"""A keyed seed per subject for model-side watermarks (``provenance.watermark``).

A middleware sees text, not logits: a watermark has to be put in by the model server, which
then needs a key per subject, so that a watermark detected later names who was served. Each
request of a guarded route gets ``seed(principal)``: the first 8 bytes of HMAC-SHA256 under
the watermark key, shifted right by one bit, so a non-negative integer below 2**63 that every
consumer takes as it is: ``SamplingParams(seed=…)`` and ``extra_args`` in vLLM, a signed 64-bit
SynthID-Text layer key (SGLang), ``torch.Generator.manual_seed``. SynthID-Text in transformers
takes a list of keys (``SynthIDTextWatermarkingConfig(keys=[…])``): :func:`synthid_keys`
expands a seed into one.

The app reads it as ``request.state.guardrail.watermark_seed`` (Starlette) or, when
``header`` is set, from that request header, which guardrail removes from what the client sent
before adding its own: a client never chooses its seed.

The audit record names the key (its id, never the key) and the principal the seed was made
for, not the seed: whoever holds a subject's seed can detect its watermark, and can also write
text that carries it, framing that subject. A trail is read more widely than the key is held
(log shippers, dashboards), so the seed is recomputed where the key is, by ``guardrail trace
seed``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from starlette.types import Scope

from guardrail.audit.record import MAX_SUBJECT, clip
from guardrail.identity import Subject
from guardrail.secrets import PreparedHmac
from guardrail.signals.engine import principal_of

_SEED = b"guardrail watermark seed v1\0"
_KEY_ID = b"guardrail watermark key id v1"
_SYNTHID = b"guardrail synthid keys v1\0"
#: Seeds remembered per principal (about 250 bytes each): a returning subject's costs a dict
#: lookup instead of an HMAC and an object (~0.3 against ~5 us on the request path).
_REMEMBERED = 16_384


@dataclass(frozen=True, slots=True)
class WatermarkSeed:
    """The seed a request was given, with what the audit record says of it."""

    seed: int
    key_id: str
    principal: str

    def as_record(self) -> dict[str, str]:
        return {"key_id": self.key_id, "principal": clip(self.principal, MAX_SUBJECT)}


class Seeds:
    """The per-subject seeds under one key, and the request header that carries them."""

    __slots__ = ("_hmac", "_remembered", "header", "key_id")

    def __init__(self, key: bytes, header: str | None = None) -> None:
        self._hmac = PreparedHmac(key)
        self.key_id = "wk:" + hmac.digest(key, _KEY_ID, "sha256").hex()[:16]
        """Names the key in audit records: which key a seed was made with, after a rotation."""
        self.header = None if header is None else header.lower().encode("latin-1")
        self._remembered: dict[str, WatermarkSeed] = {}

    def seed(self, principal: str) -> int:
        digest = self._hmac.hexdigest(_SEED + principal.encode("utf-8", "surrogatepass"))
        return int(digest[:16], 16) >> 1

    def for_subject(self, subject: Subject) -> WatermarkSeed:
        principal = principal_of(subject)
        found = self._remembered.get(principal)
        if found is None:
            if len(self._remembered) >= _REMEMBERED:
                self._remembered.clear()  # bounded; recomputing is cheap, just not free
            found = WatermarkSeed(self.seed(principal), self.key_id, principal)
            self._remembered[principal] = found
        return found

    def strip(self, scope: Scope) -> Scope:
        """``scope`` without the seed header a client may have sent (when one is configured)."""
        name = self.header
        if name is None:
            return scope
        headers = scope["headers"]
        if not any(n == name for n, _ in headers):
            return scope
        return {**scope, "headers": [(n, v) for n, v in headers if n != name]}

    def give(self, scope: Scope, seed: WatermarkSeed) -> Scope:
        """``scope`` (already stripped) carrying ``seed`` in the header, when one is set."""
        if self.header is None:
            return scope
        return {**scope, "headers": [*scope["headers"], (self.header, str(seed.seed).encode())]}


def synthid_keys(seed: int, count: int = 30) -> list[int]:
    """``count`` distinct keys in [0, 2**63) for ``SynthIDTextWatermarkingConfig(keys=…)``,
    the same for the same seed on every machine (SHA-256 in counter mode, not ``random``)."""
    keys: list[int] = []
    counter = 0
    while len(keys) < count:
        data = _SYNTHID + seed.to_bytes(8, "big") + counter.to_bytes(4, "big")
        key = int.from_bytes(hashlib.sha256(data).digest()[:8], "big") >> 1
        counter += 1
        if key not in keys:
            keys.append(key)
    return keys


def watermark_of(record: dict[str, Any]) -> tuple[str, str] | None:
    """(key id, principal) of an audit record's ``watermark``, if it has a well-formed one."""
    mark = record.get("watermark")
    if not isinstance(mark, dict):
        return None
    key_id, principal = mark.get("key_id"), mark.get("principal")
    if isinstance(key_id, str) and isinstance(principal, str):
        return key_id, principal
    return None
