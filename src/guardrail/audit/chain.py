"""How one line of the trail vouches for the one before it: a plain SHA-256 chain, or a keyed one.

A plain chain (``"prev": "sha256:…"``) finds accidents: a line lost, edited or reordered by a
tool. Anyone who can write the file can also recompute it. A keyed chain
(``"prev": "hmac-sha256:…"``, policy ``audit.chain_key``) cannot be recomputed without the key:

- each link is HMAC-SHA256 of the previous line under a subkey derived from the secret
  (:func:`derive`), so the same secret can key other things without the two ever agreeing;
- a writer's first record anchors on HMAC of its own writer id and the link of the line it
  follows (or genesis): a chain cannot be started afresh, nor moved to another writer or place;
- a writer that stops cleanly ends with a *seal* (``"action": "sealed"``) carrying its own MAC:
  a chain that ends without one was cut short, or its writer is still running or crashed.

The messages are domain-separated: a line is a JSON object (it starts with ``{``), an anchor
message starts with ``anchor``, a seal's with ``seal``.
"""

from __future__ import annotations

import hmac
from typing import Protocol

from guardrail.audit.record import GENESIS, link
from guardrail.secrets import PreparedHmac

KEYED = "hmac-sha256:"
PLAIN = "sha256:"
SEALED = "sealed"
"""The ``action`` of a seal record."""
MAC = "mac"
"""The seal's own field, always its last: HMAC of the line up to it."""
_CONTEXT = b"guardrail audit chain v1"
_MAC_AT = ',"mac":"'


class Chain(Protocol):
    keyed: bool

    def link(self, line: str | bytes) -> str:
        """The ``prev`` of the record that follows ``line`` in its writer's chain."""

    def start(self, writer: str, last: str | bytes | None) -> str:
        """The ``prev`` of ``writer``'s first record, written after ``last`` (None: nothing)."""

    def seal(self, line: str) -> str:
        """``line`` as it is written (a seal gets its MAC)."""


class PlainChain:
    keyed = False

    def link(self, line: str | bytes) -> str:
        return link(line)

    def start(self, writer: str, last: str | bytes | None) -> str:
        return GENESIS if last is None else link(last)

    def seal(self, line: str) -> str:
        return line


def derive(secret: bytes) -> bytes:
    """The chain's own subkey of ``secret``."""
    return hmac.digest(secret, _CONTEXT, "sha256")


class KeyedChain:
    keyed = True

    def __init__(self, secret: bytes) -> None:
        # the padded-key states computed once: a link costs two copies and a short hash more
        # than plain SHA-256, not a key schedule (~1.2 against 3 us)
        self._prepared = PreparedHmac(derive(secret))

    def _hmac(self, data: bytes) -> str:
        return KEYED + self._prepared.hexdigest(data)

    def link(self, line: str | bytes) -> str:
        return self._hmac(line.encode("utf-8") if isinstance(line, str) else line)

    def anchor(self, writer: str, after: str | None) -> str:
        """The first ``prev`` of ``writer``, after the line whose keyed link is ``after``."""
        message = b"anchor\0" + writer.encode("utf-8") + b"\0" + (after or "genesis").encode()
        return self._hmac(message)

    def start(self, writer: str, last: str | bytes | None) -> str:
        return self.anchor(writer, None if last is None else self.link(last))

    def seal(self, line: str) -> str:
        # The MAC goes last, so the line it covers is the written one with the MAC cut off.
        return f'{line[:-1]}{_MAC_AT}{self._mac(line.encode("utf-8"))}"}}'

    def sealed(self, raw: bytes) -> bool:
        """Whether ``raw`` (a seal as written) carries the MAC of its own content."""
        at = raw.rfind(_MAC_AT.encode())
        if at < 0 or not raw.endswith(b'"}'):
            return False
        expected = self._mac(raw[:at] + b"}")
        return hmac.compare_digest(raw[at + len(_MAC_AT) : -2], expected.encode())

    def _mac(self, data: bytes) -> str:
        return self._hmac(b"seal\0" + data)

    def matches(self, prev: str, expected: str) -> bool:
        return hmac.compare_digest(prev.encode(), expected.encode())


def chain_for(secret: bytes | None) -> PlainChain | KeyedChain:
    return PlainChain() if secret is None else KeyedChain(secret)
