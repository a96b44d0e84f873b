"""Secret references: ``env:NAME``, ``file:PATH``, or a literal (tolerated only in observe mode).

Error messages name the reference (``env:GUARDRAIL_SECRET``, ``file:/run/secrets/x``) so the
operator knows what to fix, and never the secret itself: they end up in logs.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from guardrail.errors import SecretError

if TYPE_CHECKING:
    from guardrail.policy import Policy

logger = logging.getLogger("guardrail")

SecretKind = Literal["env", "file", "literal"]


def reference_kind(ref: str) -> SecretKind:
    """Whether ``ref`` points at an environment variable, a file, or is the secret itself."""
    if ref.startswith("env:"):
        return "env"
    if ref.startswith("file:"):
        return "file"
    return "literal"


def resolve_secret(ref: str) -> bytes:
    """The secret ``ref`` stands for, as bytes; ``SecretError`` (naming ``ref``) if it can't."""
    kind = reference_kind(ref)
    if kind == "env":
        name = ref.removeprefix("env:")
        value = os.environ.get(name, "") if name else ""
        if not value:
            state = "is empty" if name in os.environ else "is not set"
            raise SecretError(f"secret {ref!r}: environment variable {name!r} {state}")
        return value.encode("utf-8")
    if kind == "file":
        path = Path(ref.removeprefix("file:")).expanduser()
        try:
            # Files written by `echo` or editors end in a newline that is not part of the secret.
            data = path.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise SecretError(
                f"secret {ref!r}: cannot read {str(path)!r} ({exc.strerror})"
            ) from None
        if not data:
            raise SecretError(f"secret {ref!r}: the file is empty")
        return data
    if not ref:
        # An empty key would make every keyed hash guessable.
        raise SecretError("secret: the literal secret is empty")
    return ref.encode("utf-8")


def location_argument(value: str) -> str:
    """A command line's trail or index (argparse ``type=``): ``env:NAME`` or ``file:PATH``
    stands for it, so that a Redis URI's password stays out of argv, which ``ps`` shows every
    user of the host; ``file://PATH`` is a file sink's URI as the policy writes it (its
    ``{pid}`` or ``{worker}`` read as every worker's: ``*``); anything else is the location
    itself."""
    if value.startswith("file://"):  # a file sink's own URI, {pid} standing for every worker
        return value.removeprefix("file://").replace("{pid}", "*").replace("{worker}", "*")
    if reference_kind(value) == "literal":
        return value
    try:
        location = resolve_secret(value).decode("utf-8").strip()
    except (SecretError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if "\n" in location or len(location) > 4096:  # a trail's contents, say: not shown
        raise argparse.ArgumentTypeError(
            f"{value!r} holds not one location but {len(location)} characters over "
            f"{location.count(chr(10)) + 1} lines"
        )
    return location


def policy_secret(policy: Policy, storage_uri: str) -> bytes:
    """The secret that keys API-key hashing (and, by default, clearances)."""
    if policy.secret is not None:
        return resolve_secret(policy.secret)
    if policy.identity.api_key is not None and not storage_uri.startswith("memory"):
        raise SecretError(
            "a shared storage is configured but the policy has no `secret`: every worker would "
            "hash API keys differently and no two would share a bucket; set secret: env:NAME"
        )
    if policy.identity.api_key is not None:
        logger.warning(
            "guardrail: no `secret` in the policy; API keys are hashed with a per-process secret, "
            "so their hashes change on restart and `guardrail hash-key` cannot reproduce them"
        )
    return os.urandom(32)


DERIVE_FROM_SECRET = "secret"  # noqa: S105 - a keyword, not a secret
"""``audit.chain_key: secret``: key the audit chain with a subkey of the policy's ``secret``."""


def chain_secret(policy: Policy) -> bytes | None:
    """What keys the audit chain (``audit.chain_key``), or None when the chain is plain SHA-256.
    The chain derives a subkey of its own from it (``guardrail.audit.chain.derive``)."""
    ref = policy.audit.chain_key
    if ref is None:
        return None
    if ref == DERIVE_FROM_SECRET:
        if policy.secret is None:  # the policy refuses this; a Policy built by hand may not
            raise SecretError("audit.chain_key: secret, but the policy has no `secret`")
        return resolve_secret(policy.secret)
    return resolve_secret(ref)


class PreparedHmac:
    """HMAC-SHA256 under one key with its two padded-key states hashed once (RFC 2104): a call
    costs two hash copies and two short updates, about half of ``hmac.digest``'s key schedule.
    For the keys hashed on every request (API keys) and every audit record (the keyed chain)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        # RFC 2104: a key longer than the block is hashed first, a shorter one zero-padded.
        key = hashlib.sha256(key).digest() if len(key) > 64 else key
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def hexdigest(self, data: bytes) -> str:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()
