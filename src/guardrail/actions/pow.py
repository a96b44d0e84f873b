"""Proof of work: what a challenged client pays per challenge, and what the server checks.

The protocol (``guardrail.client.solve_pow`` speaks it; the challenge page's worker too): the
challenge carries ``pow: {algorithm: "sha256", difficulty: d, seed: s}``. A *nonce* is a decimal
number of at most MAX_NONCE_DIGITS digits such that SHA-256 of ``"<s>:<nonce>"`` (UTF-8) starts
with at least ``d`` zero bits. The seed is bound to the challenge id by the server's secret, so
a nonce answers one challenge only, and the challenge id is single-use.
"""

from __future__ import annotations

import hashlib

ALGORITHM = "sha256"
#: A nonce is found in about 2^d tries; 2^32 has 10 digits. Longer ones are refused unread.
MAX_NONCE_DIGITS = 16


def leading_zero_bits(digest: bytes) -> int:
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def work(seed: str, nonce: str) -> bytes:
    return hashlib.sha256(f"{seed}:{nonce}".encode()).digest()


def verify(seed: str, nonce: str, difficulty: int) -> bool:
    """Is ``nonce`` a valid answer? Anything but 1 to MAX_NONCE_DIGITS ASCII digits is not."""
    if not (0 < len(nonce) <= MAX_NONCE_DIGITS and nonce.isascii() and nonce.isdigit()):
        return False
    return leading_zero_bits(work(seed, nonce)) >= difficulty
