"""The provenance hooks a policy builds, for the middleware at startup and for each reload: the
routes whose responses are captured, the watermark seeds and the response signer. The recorder
is not here: it holds the index, built once (its settings are restart-only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from guardrail.provenance.signatures import ResponseSigner
from guardrail.provenance.watermark import Seeds
from guardrail.secrets import resolve_secret

if TYPE_CHECKING:
    from guardrail.policy import Policy


def captured_routes(policy: Policy) -> frozenset[str]:
    """The routes whose responses are sketched and receipted (empty: provenance off)."""
    conf = policy.provenance
    if not conf.enabled:
        return frozenset()
    if conf.routes is not None:
        return frozenset(conf.routes)
    return frozenset(r.name for r in policy.routes if r.inspect is not None and not r.exempt)


def seeds_of(policy: Policy) -> Seeds | None:
    mark = policy.provenance.watermark
    return None if mark is None else Seeds(resolve_secret(mark.key), mark.header)


def signer_of(policy: Policy, clock: Callable[[], float]) -> ResponseSigner | None:
    signing = policy.provenance.signatures
    if signing is None:
        return None
    return ResponseSigner(resolve_secret(signing.key), signing.max_bytes, clock, signing.key_id)
