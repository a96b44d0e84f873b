"""For API clients that are challenged: solve the proof of work a 403 carries.

With httpx or the OpenAI SDK, let the client do it all (httpx needed for these):

    from openai import OpenAI
    from guardrail.client import openai_http_client

    client = OpenAI(http_client=openai_http_client())  # AsyncOpenAI: openai_async_http_client()

``ChallengeAuth`` is the httpx auth flow underneath (``httpx.Client(auth=ChallengeAuth())``).
By hand:

    from guardrail.client import solve_pow

    try:
        client.chat.completions.create(...)
    except openai.PermissionDeniedError as exc:
        body = exc.response.json()
        nonce = solve_pow(body)
        # POST {"challenge_id": body["challenge"]["id"], "nonce": nonce} to
        # body["challenge"]["verify_url"], then retry with the clearance it returns
        # (Guardrail-Clearance).

The protocol is in ``guardrail.actions.pow``; ``solve_pow`` needs nothing but the standard
library, so this module can be copied into a client that does not install guardrail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from guardrail.challenge_auth import (
        ChallengeAuth,
        openai_async_http_client,
        openai_http_client,
    )

__all__ = [
    "ChallengeAuth",
    "ChallengeFormatError",
    "openai_async_http_client",
    "openai_http_client",
    "pow_of",
    "search",
    "solve_pow",
]


class ChallengeFormatError(ValueError):
    """The object given is not a guardrail proof-of-work challenge."""


def pow_of(challenge: Mapping[str, Any]) -> tuple[str, int]:
    """The seed and difficulty of ``challenge``: the ``challenge`` object of a 403 body, or the
    whole body."""
    if "challenge" in challenge and isinstance(challenge["challenge"], Mapping):
        challenge = challenge["challenge"]
    pow_ = challenge.get("pow")
    if not isinstance(pow_, Mapping) or pow_.get("algorithm") != "sha256":
        raise ChallengeFormatError("expected a challenge with pow: {algorithm: sha256, ...}")
    seed, difficulty = pow_.get("seed"), pow_.get("difficulty")
    if not isinstance(seed, str) or not isinstance(difficulty, int) or not 0 < difficulty <= 64:
        raise ChallengeFormatError(f"bad pow parameters: seed={seed!r}, difficulty={difficulty!r}")
    return seed, difficulty


def search(seed: str, difficulty: int, start: int, count: int) -> str | None:
    """The first nonce in ``[start, start + count)`` that answers, or None."""
    prefix = hashlib.sha256(f"{seed}:".encode())
    limit = 1 << (256 - difficulty)
    for nonce in range(start, start + count):
        digest = prefix.copy()
        digest.update(str(nonce).encode())
        if int.from_bytes(digest.digest(), "big") < limit:
            return str(nonce)
    return None


def solve_pow(challenge: Mapping[str, Any], *, max_tries: int = 1 << 34) -> str:
    """The nonce that answers ``challenge``: the ``challenge`` object of a 403 body, or the
    whole body. About 2^difficulty SHA-256 computations (difficulty 18: ~0.3 s in CPython)."""
    seed, difficulty = pow_of(challenge)
    nonce = search(seed, difficulty, 0, max_tries)
    if nonce is None:
        raise ChallengeFormatError(f"no nonce found in {max_tries} tries")
    return nonce


def __getattr__(name: str) -> Any:
    # The httpx side is imported on first use: solve_pow needs nothing but the standard library.
    if name in _HTTPX:
        from guardrail import challenge_auth

        return getattr(challenge_auth, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_HTTPX = frozenset({"ChallengeAuth", "openai_http_client", "openai_async_http_client"})
