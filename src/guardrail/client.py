"""For API clients that are challenged: solve the proof of work a 403 carries.

    from guardrail.client import solve_pow

    try:
        client.chat.completions.create(...)
    except openai.PermissionDeniedError as exc:
        body = exc.response.json()
        nonce = solve_pow(body)
        # POST {"challenge_id": body["challenge"]["id"], "nonce": nonce} to the challenge's
        # verify endpoint, then retry with the clearance it returns (Guardrail-Clearance).

The protocol is in ``guardrail.actions.pow``; this module needs nothing but the standard
library, so it can be copied into a client that does not install guardrail.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from typing import Any


class ChallengeFormatError(ValueError):
    """The object given is not a guardrail proof-of-work challenge."""


def solve_pow(challenge: Mapping[str, Any], *, max_tries: int = 1 << 34) -> str:
    """The nonce that answers ``challenge``: the ``challenge`` object of a 403 body, or the
    whole body. About 2^difficulty SHA-256 computations (difficulty 18: ~0.3 s in CPython)."""
    if "challenge" in challenge and isinstance(challenge["challenge"], Mapping):
        challenge = challenge["challenge"]
    pow_ = challenge.get("pow")
    if not isinstance(pow_, Mapping) or pow_.get("algorithm") != "sha256":
        raise ChallengeFormatError("expected a challenge with pow: {algorithm: sha256, ...}")
    seed, difficulty = pow_.get("seed"), pow_.get("difficulty")
    if not isinstance(seed, str) or not isinstance(difficulty, int) or not 0 < difficulty <= 64:
        raise ChallengeFormatError(f"bad pow parameters: seed={seed!r}, difficulty={difficulty!r}")
    prefix = hashlib.sha256(f"{seed}:".encode())
    limit = 1 << (256 - difficulty)
    for nonce in itertools.islice(itertools.count(), max_tries):
        digest = prefix.copy()
        digest.update(str(nonce).encode())
        if int.from_bytes(digest.digest(), "big") < limit:
            return str(nonce)
    raise ChallengeFormatError(f"no nonce found in {max_tries} tries")
