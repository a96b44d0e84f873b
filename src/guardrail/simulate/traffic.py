"""One simulated request, the identities that send it, and the chat body a client resends.

Chat clients resend the whole conversation on every turn, so bodies grow while only the
newest user turn is new. ``Conversation`` encodes each message once and joins the encoded
pieces per request: a 30-turn session costs one ``json.dumps`` a turn, not thirty.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any

from guardrail.simulate.clients import Headers

PATH = "/v1/chat/completions"


@dataclass(frozen=True, slots=True)
class SimRequest:
    """What one client sends at one instant; ``population`` is for the report only."""

    t: float
    population: str
    account: str
    ip: str
    headers: Headers  # static per client: host, fingerprint, authorization, x-account-id
    body: bytes


def account_rng(seed: int, population: str, index: int) -> random.Random:
    """The account's own generator: its stream does not depend on any other account's.

    Seeded from a string, which ``random`` hashes with SHA-512 (not ``hash()``): stable
    across processes and Python versions.
    """
    return random.Random(f"guardrail-sim:{seed}:{population}:{index}")


def population_rng(seed: int, population: str) -> random.Random:
    """Draws shared by a whole population (address pools, a campaign's templates)."""
    return random.Random(f"guardrail-sim:{seed}:{population}")


def identity(seed: int, population: str, index: int) -> tuple[str, str]:
    """An opaque ``(account id, API key)``: nothing in them tells the population."""
    digest = hashlib.sha256(f"guardrail-sim-id:{seed}:{population}:{index}".encode()).hexdigest()
    return f"acct-{digest[:10]}", f"sk-sim-{digest[10:42]}"


def _encode(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class Conversation:
    """A chat client's message list and request parameters, encoded incrementally."""

    __slots__ = ("_head", "_keep", "_messages", "_system")

    def __init__(self, params: dict[str, Any], system: str | None = None, keep: int = 80) -> None:
        head = _encode(params)
        self._head = (head[:-1] + b',"messages":[') if len(head) > 2 else b'{"messages":['
        self._system = _encode({"role": "system", "content": system}) if system else None
        self._messages: list[bytes] = []
        self._keep = keep  # clients drop the oldest turns past this many messages

    def reset(self) -> None:
        """A new conversation: same client, same parameters, empty history."""
        self._messages.clear()

    def ask(self, text: str) -> bytes:
        """Append a user turn and return the request body that carries the whole history."""
        self._messages.append(_encode({"role": "user", "content": text}))
        if len(self._messages) > self._keep:
            del self._messages[: len(self._messages) - self._keep]
        parts = [self._system, *self._messages] if self._system else self._messages
        return self._head + b",".join(parts) + b"]}"

    def answer(self, text: str) -> None:
        """Record the assistant's reply, which the next request resends."""
        self._messages.append(_encode({"role": "assistant", "content": text}))

    def __len__(self) -> int:
        return len(self._messages)


def single(params: dict[str, Any], text: str) -> bytes:
    """A one-shot request body (no history)."""
    return _encode({**params, "messages": [{"role": "user", "content": text}]})
