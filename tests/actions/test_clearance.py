"""Clearances: signed, expiring, bound to the client they were issued to."""

from __future__ import annotations

import pytest
from itsdangerous import URLSafeSerializer

from guardrail.actions.clearance import ClearanceSigner
from guardrail.errors import ClearanceError, GuardrailError
from guardrail.identity import Subject
from guardrail.policy import Clearance

NOW = 1_800_000_000.0
ALICE = Subject(api_key="k:" + "a" * 32, account=None, ip="198.51.100.7", subnet="198.51.100.0/24")
BROWSER = {"headers": [(b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64)")]}


def signer(*keys: bytes, **config: object) -> ClearanceSigner:
    return ClearanceSigner(list(keys) or [b"secret-1"], Clearance(**config))  # type: ignore[arg-type]


def test_a_clearance_verifies_for_its_client_until_it_expires() -> None:
    s = signer(ttl=600)
    token, claims = s.issue(ALICE, BROWSER, NOW)
    assert claims.expires_at == NOW + 600
    assert s.verify(token, ALICE, BROWSER, NOW + 599) == claims
    with pytest.raises(ClearanceError, match="expired"):
        s.verify(token, ALICE, BROWSER, NOW + 600)


def test_a_forged_clearance_is_refused() -> None:
    s = signer()
    token, _ = s.issue(ALICE, BROWSER, NOW)
    binding = URLSafeSerializer(b"secret-1", salt="guardrail.clearance").loads(token)["b"]
    forged = URLSafeSerializer(b"another-secret", salt="guardrail.clearance").dumps(
        {"id": "x", "exp": NOW + 10**6, "b": binding}
    )
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad in (forged, tampered, "", "not.a.token", token + "x"):
        with pytest.raises(GuardrailError, match="not a clearance this server signed"):
            s.verify(bad, ALICE, BROWSER, NOW)


@pytest.mark.parametrize(
    ("other", "scope"),
    [
        (Subject(ALICE.api_key, None, "203.0.113.9", "203.0.113.0/24"), BROWSER),  # subnet
        (ALICE, {"headers": [(b"user-agent", b"curl/8.5.0")]}),  # user agent
        (Subject("k:" + "b" * 32, None, ALICE.ip, ALICE.subnet), BROWSER),  # subject
    ],
)
def test_a_clearance_replayed_by_another_client_is_refused(
    other: Subject, scope: dict[str, object]
) -> None:
    s = signer()
    token, _ = s.issue(ALICE, BROWSER, NOW)
    with pytest.raises(ClearanceError, match="another client"):
        s.verify(token, other, scope, NOW)


def test_bind_names_what_counts() -> None:
    s = signer(bind=["subject"])
    token, claims = s.issue(ALICE, BROWSER, NOW)
    moved = Subject(ALICE.api_key, None, "203.0.113.9", "203.0.113.0/24")
    assert s.verify(token, moved, {"headers": []}, NOW) == claims  # another network and client


def test_secrets_rotate_first_signs_every_one_verifies() -> None:
    old = signer(b"old")
    token, claims = old.issue(ALICE, BROWSER, NOW)
    rotated = signer(b"new", b"old")
    assert rotated.verify(token, ALICE, BROWSER, NOW) == claims
    fresh, _ = rotated.issue(ALICE, BROWSER, NOW)
    with pytest.raises(ClearanceError):
        old.verify(fresh, ALICE, BROWSER, NOW)  # signed with the new secret only


def test_a_clearance_carries_no_client_value() -> None:
    s = signer()
    token, _ = s.issue(ALICE, BROWSER, NOW)
    text = URLSafeSerializer(b"secret-1", salt="guardrail.clearance").loads(token)
    flat = repr(text)
    for value in (ALICE.ip, ALICE.subnet, ALICE.api_key or "", "Mozilla"):
        assert value not in flat and value not in token
