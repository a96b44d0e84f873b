"""``guardrail trace verify-response``: check a saved response's signature
(``provenance.signatures``) with the published public key, using http-message-signatures' own
verifier, and name the request it answered (its ``guardrail-request-id``, for ``trace
receipt``).

A response is saved as ``curl -D headers.txt -o body.json``: the header block (its status
line first; after redirects, the last block counts) and the body as received.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

from guardrail.errors import GuardrailError
from guardrail.provenance.signatures import LABEL, Headers, Response, key_id_of

VERIFIED, NOT_VERIFIED, BAD_INPUT = 0, 1, 2


def add_arguments(verify: argparse.ArgumentParser) -> None:
    verify.add_argument(
        "--headers", required=True, metavar="FILE", help="the header block (curl -D FILE)"
    )
    verify.add_argument("--body", required=True, metavar="FILE", help="the body as received")
    keys = verify.add_mutually_exclusive_group(required=True)
    keys.add_argument("--public-key", metavar="FILE", help="the published key: PEM or JWK")
    keys.add_argument("--policy", metavar="POLICY", help="its provenance.signatures key")
    verify.add_argument(
        "--max-age",
        metavar="DURATION",
        help="refuse a signature older than this (30d, 12h …); default: any age",
    )
    verify.add_argument("--json", action="store_true", help="machine-readable output")


def parse_headers(text: str) -> tuple[int | None, list[tuple[bytes, bytes]]]:
    """The status and header fields of the last header block of ``text`` (curl -D)."""
    blocks = [b for b in text.replace("\r\n", "\n").split("\n\n") if b.strip()]
    if not blocks:
        return None, []
    status = None
    fields: list[tuple[bytes, bytes]] = []
    for line in blocks[-1].split("\n"):
        if line.startswith("HTTP/"):
            parts = line.split()
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        elif ":" in line:
            name, _, value = line.partition(":")
            fields.append((name.strip().lower().encode("latin-1"), value.strip().encode("latin-1")))
    return status, fields


def load_public_key(data: bytes) -> tuple[Any, str]:
    """A published key (PEM, or the JWK ``trace public-key`` prints) and its key id."""
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = data.strip()
    if text.startswith(b"{"):
        jwk = json.loads(text)
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not jwk.get("x"):
            raise GuardrailError("--public-key: a JWK with kty OKP, crv Ed25519 and x")
        import base64

        raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
        key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        return key, str(jwk.get("kid") or key_id_of(key))
    pem = load_pem_public_key(text)
    if not isinstance(pem, ed25519.Ed25519PublicKey):
        raise GuardrailError("--public-key: an Ed25519 public key")
    return pem, key_id_of(pem)


def verify(
    status: int,
    fields: list[tuple[bytes, bytes]],
    body: bytes,
    key: Any,
    key_id: str,
    **options: Any,
) -> dict[str, Any]:
    """What the library's verifier says of the response, as data."""
    from http_message_signatures import (
        HTTPMessageSignaturesException,
        HTTPMessageVerifier,
        MappingKeyResolver,
        algorithms,
    )

    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={key_id: key}, private_keys={}),
    )
    message = Response(status, Headers(fields))
    try:
        results = verifier.verify(
            message,
            body=body,
            expect_tag=LABEL,
            require_components=("content-digest",),
            **options,
        )
    except HTTPMessageSignaturesException as exc:  # InvalidSignature among them
        return {"verified": False, "error": str(exc) or type(exc).__name__, "keyid": key_id}
    result = results[0]
    created = result.parameters.get("created")
    covered = {k: v for k, v in result.covered_components.items() if k != '"@signature-params"'}
    return {
        "verified": True,
        "keyid": result.parameters.get("keyid"),
        "created": None
        if not isinstance(created, int)
        else datetime.datetime.fromtimestamp(created, tz=datetime.UTC).isoformat(),
        "request_id": covered.get('"guardrail-request-id"'),
        "covered": covered,
    }


def run(args: argparse.Namespace, policy_key: bytes | None, policy_key_id: str | None) -> int:
    """The command; ``policy_key``: the private key the policy names (when --policy), and the
    key id it sets, if any."""
    from guardrail.policy_types import parse_duration

    try:
        text = Path(args.headers).read_text(encoding="latin-1")
        body = Path(args.body).read_bytes()
        if policy_key is not None:
            from cryptography.hazmat.primitives.serialization import load_pem_private_key

            private = load_pem_private_key(policy_key, password=None)
            key: Any = private.public_key()
            key_id = policy_key_id or key_id_of(key)
        else:
            key, key_id = load_public_key(Path(args.public_key).read_bytes())
        max_age = None if args.max_age is None else parse_duration(args.max_age)
    except (OSError, ValueError, GuardrailError) as exc:
        print(f"guardrail: {exc}", file=sys.stderr)
        return BAD_INPUT
    status, fields = parse_headers(text)
    if status is None:
        print(
            f"guardrail: {args.headers}: no HTTP status line (curl -D writes one)", file=sys.stderr
        )
        return BAD_INPUT
    age = None if max_age is None else datetime.timedelta(seconds=max_age)
    data = verify(status, fields, body, key, key_id, max_age=age)
    if args.json:
        print(json.dumps(data, indent=2))
    elif data["verified"]:
        print(
            f"VERIFIED: signed by {data['keyid']} at {data['created']}; the body's digest, status "
            f"{status} and content type are covered"
        )
        if data["request_id"]:
            print(
                f"request {data['request_id']}: guardrail trace receipt {data['request_id']} "
                "--audit TRAIL... shows its record"
            )
    else:
        print(f"NOT VERIFIED: {data['error']}")
    return VERIFIED if data["verified"] else NOT_VERIFIED
