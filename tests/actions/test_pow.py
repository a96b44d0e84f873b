"""Proof of work: the server's check and the client's solver speak one protocol."""

from __future__ import annotations

import hashlib

import pytest

from guardrail.actions import pow
from guardrail.client import ChallengeFormatError, solve_pow


def challenge(seed: str = "5eed", difficulty: int = 12) -> dict[str, object]:
    return {"id": "c1", "pow": {"algorithm": "sha256", "difficulty": difficulty, "seed": seed}}


def test_leading_zero_bits() -> None:
    assert pow.leading_zero_bits(b"\x00\x00\xff" + bytes(29)) == 16
    assert pow.leading_zero_bits(b"\x01" + bytes(31)) == 7
    assert pow.leading_zero_bits(b"\x80" + bytes(31)) == 0
    assert pow.leading_zero_bits(bytes(32)) == 256


def test_the_solver_finds_what_the_server_accepts() -> None:
    nonce = solve_pow(challenge())
    assert pow.verify("5eed", nonce, 12)
    digest = hashlib.sha256(f"5eed:{nonce}".encode()).digest()
    assert pow.leading_zero_bits(digest) >= 12
    # the whole 403 body works as well as its challenge object
    assert solve_pow({"type": "abnormal-usage-detected", "challenge": challenge()}) == nonce


def test_a_nonce_answers_its_own_seed_only() -> None:
    nonce = solve_pow(challenge("seed-a", 14))
    assert pow.verify("seed-a", nonce, 14)
    assert not pow.verify("seed-b", nonce, 14)


@pytest.mark.parametrize(
    "nonce",
    ["", "-1", "1.0", "12a", " 12", "\uff11\uff12", "1" * (pow.MAX_NONCE_DIGITS + 1), "0x1f"],
)
def test_malformed_nonces_are_refused_unread(nonce: str) -> None:
    assert not pow.verify("5eed", nonce, 1)


def test_a_wrong_nonce_is_refused() -> None:
    nonce = solve_pow(challenge(difficulty=16))
    wrong = next(str(n) for n in range(int(nonce) + 1, 10**6) if not pow.verify("5eed", str(n), 16))
    assert not pow.verify("5eed", wrong, 16)


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"pow": {"algorithm": "md5", "difficulty": 4, "seed": "s"}},
        {"pow": {"algorithm": "sha256", "difficulty": 0, "seed": "s"}},
        {"pow": {"algorithm": "sha256", "difficulty": 4, "seed": 7}},
    ],
)
def test_the_solver_refuses_what_is_not_a_challenge(bad: dict[str, object]) -> None:
    with pytest.raises(ChallengeFormatError):
        solve_pow(bad)
