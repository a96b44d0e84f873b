"""Read an OpenAI-style JSON request body for inspection, then replay it to the app unchanged.

The body is read only up to the route's ``inspect_max_bytes``, and within its
``inspect_timeout``; the messages already read are replayed exactly as received (same chunks,
same ``more_body`` flags) before the rest streams on from the server, so the app sees the
request byte for byte.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import Message, Receive, Scope

from guardrail.deadlines import Deadlines
from guardrail.metering import OPENAI, Meter


@dataclass(frozen=True, slots=True)
class OpenAIRequest:
    """What the risk engine and tiers read from an inspected body."""

    model: str | None
    stream: bool
    max_tokens: int | None
    prompt: str  # the newest user turn (chat) or the prompt (completions)
    body: dict[str, Any]


def parse_request(raw: bytes, meter: Meter = OPENAI) -> OpenAIRequest | None:
    """The inspected body as the risk engine and tiers read it; None when it is not a JSON
    object (the app answers it: guardrail only looks, and must never turn it into a 500)."""
    try:
        body = orjson.loads(raw)  # a fifth of json.loads' time on a 1 KB chat body
    except orjson.JSONDecodeError:
        # orjson refuses some of what json (and so a Python app) accepts: a lone surrogate
        # escape, NaN. A client must not slip a prompt past inspection with one.
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            return None
    if not isinstance(body, dict):
        return None
    model = body.get("model")
    if meter is OPENAI:  # on the hot path: the one field, not the whole ask
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        # bool is an int to isinstance, and `true` is no token count
        if type(max_tokens) is not int or not 0 <= max_tokens < 2**31:
            max_tokens = None
    else:
        max_tokens = meter.ask(body).output
    return OpenAIRequest(
        model if isinstance(model, str) else None,
        body.get("stream") is True,
        max_tokens,
        meter.prompt(body),
        body,
    )


class Replay:
    """A ``receive`` that hands back the messages already read, then defers to the server."""

    __slots__ = ("_messages", "_receive")

    def __init__(self, messages: Sequence[Message], receive: Receive) -> None:
        self._messages = list(messages)
        self._receive = receive

    async def __call__(self) -> Message:
        if self._messages:
            return self._messages.pop(0)
        return await self._receive()


class BodyTimeout(Exception):
    """The client did not send the body (up to what is read of it) before the deadline.
    ``replay`` hands the app what did arrive, then defers to the server."""

    def __init__(self, replay: Replay) -> None:
        super().__init__("request body not received in time")
        self.replay = replay


async def read_body(
    receive: Receive,
    max_bytes: int,
    deadlines: Deadlines | None = None,
    within: float = 0.0,
) -> tuple[bytes | None, Replay]:
    """The whole body if it fits in ``max_bytes`` (else None), and a receive that replays it.
    With ``deadlines``, raises ``BodyTimeout`` if reading takes more than ``within`` seconds."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    size = 0
    complete = False
    watched = deadlines.start(within) if deadlines is not None else None
    try:
        while size <= max_bytes:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # http.disconnect: the app will see it too
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                complete = size <= max_bytes
                break
    except asyncio.CancelledError:
        if watched is not None and deadlines is not None and deadlines.expired(watched):
            raise BodyTimeout(Replay(messages, receive)) from None
        raise
    finally:
        if watched is not None and deadlines is not None:
            deadlines.stop(watched)
    return (b"".join(chunks) if complete else None), Replay(messages, receive)


def replace_body(scope: Scope, replay: Replay, body: bytes) -> tuple[Scope, Replay]:
    """A scope and a receive that give the app ``body`` instead of the one read (a tier's
    rewrite). ``Content-Length`` follows; a chunked request stays chunked."""
    headers = []
    sized = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            sized = True
        else:
            headers.append((name, value))
    if sized:
        headers.append((b"content-length", str(len(body)).encode()))
    message = {"type": "http.request", "body": body, "more_body": False}
    return {**scope, "headers": headers}, Replay([message], replay._receive)


def declared_size(scope: Scope, unread: int) -> int:
    """The size of a body guardrail did not read: its Content-Length, else ``unread`` (more
    than it reads)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return max(0, int(value))
            except ValueError:
                break
    return unread


def declares_body(scope: Scope) -> bool:
    """Does the request say a body follows (a Content-Length other than 0, or chunked)?"""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return bytes(value).strip() != b"0"
        if name == b"transfer-encoding":
            return True
    return False
