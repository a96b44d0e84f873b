"""Server-sent events as they cross the middleware: whole events out of arbitrary body chunks.

Guardrail forwards a metered or paced stream one whole event at a time, so that whatever it
does between events (wait, or end the stream) never tears one. Only an unfinished event's
bytes are held back, until its blank line arrives; the bytes are forwarded as they came.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

#: The blank line that ends an event: LF LF, or CRLF CRLF (and the mixed forms, which contain
#: LF [CR] LF). Bare-CR line endings are legal but no model server sends them.
_BOUNDARY = re.compile(rb"\n\r?\n")

DONE = b"[DONE]"


class EventSplitter:
    """Cuts a byte stream into whole events, each with its terminating blank line."""

    __slots__ = ("tail",)

    def __init__(self) -> None:
        self.tail = b""  # an event begun and not finished

    def feed(self, chunk: bytes) -> list[bytes]:
        if self.tail:
            start = max(0, len(self.tail) - 2)  # a boundary may straddle the two chunks
            chunk = self.tail + chunk
        else:
            start = 0
            if (
                chunk.endswith(b"\n\n")
                and chunk.find(b"\n\n") == len(chunk) - 2
                and b"\n\r\n" not in chunk
            ):
                return [chunk]  # one whole event: what servers send, message by message
        events = []
        begin = 0
        while (found := _BOUNDARY.search(chunk, start)) is not None:
            end = found.end()
            events.append(chunk[begin:end])
            begin = start = end
        self.tail = chunk[begin:]
        return events


def data_of(event: bytes) -> bytes | None:
    """The event's data (its ``data:`` lines joined by LF), or None when it has none."""
    if event.startswith(b"data: ") and event.count(b"\n") <= 2:  # one line: the usual case
        return event[6:].rstrip(b"\r\n")
    lines = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(lines) if lines else None


def payload(data: bytes | bytearray | None) -> dict[str, Any] | None:
    """An event's data (``data_of``) as a JSON object, or None (no data, ``[DONE]``, not an
    object)."""
    if not data or data == DONE:
        return None
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


def error_event(message: str, code: str) -> bytes:
    """An error event the OpenAI SDKs raise as ``APIError``, followed by ``[DONE]``."""
    body = {"error": {"message": message, "type": code, "code": code, "param": None}}
    return b"data: " + orjson.dumps(body) + b"\n\ndata: [DONE]\n\n"
