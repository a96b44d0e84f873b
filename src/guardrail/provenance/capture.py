"""The served body, seen in passing on a provenance route: its receipt and its text.

``Capture`` is the outermost ``send`` of the request: it sees each body message exactly as the
client gets it (after the relay's cut or pacing) and hands it on first, untouched and
unheld; only then does it hash it (the receipt: SHA-256 and size of the body as served) and
read it:

- a JSON body (2xx, ``application/json``, not compressed) is copied, up to ``JSON_MAX``; it is
  parsed after the response, by the recorder, off the request path (``texts``);
- an event stream's events are read one by one as they pass, and their deltas assembled
  (``EventSplitter`` holds an unfinished event's bytes only, never what is forwarded), up to
  ``TEXT_MAX`` characters, past which the stream is only hashed. The usual chunk is read from
  the stream's frame (``deltas``: the bytes around its text, learnt from one parsed event), so
  most events are not parsed: ~2 µs a chunk in all, hash included;
- anything else (another type, a compressed body, an error status) is only hashed.

The texts come from ``choices[].message.content`` (chat), ``choices[].text`` (completions),
``output[].content[].text`` (responses), and their streamed deltas; one text per choice.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from starlette.types import Message, Send

from guardrail.deltas import Frame
from guardrail.deltas import frame as frame_of
from guardrail.sse import EventSplitter, data_of, payload

#: The largest JSON body copied for its text; a larger one is hashed, not sketched.
JSON_MAX = 1024 * 1024
#: Characters of text assembled from a stream; the sketch reads 2048 words at most.
TEXT_MAX = 64 * 1024
#: An unfinished event held back longer than this is no event stream: hashed only.
EVENT_MAX = 256 * 1024

#: Events tried for the stream's frame (``deltas``): the first usually carries the role too.
LEARN = 3
#: What a text read from its frame may not hold: a quote, a backslash, a line break.
_UNPLAIN = b'"\\\r\n'

_HASH, _JSON, _SSE = 0, 1, 2


class Capture:
    """A ``send`` that forwards every message as it comes, then notes what it carried."""

    __slots__ = (
        "_hash",
        "_send",
        "chars",
        "copy",
        "frame",
        "learn",
        "mode",
        "parts",
        "size",
        "splitter",
    )

    def __init__(self, send: Send) -> None:
        self._send = send
        self._hash = hashlib.sha256()
        self.size = 0
        self.mode = _HASH
        self.copy: bytearray | None = None
        self.parts: dict[int, list[str]] = {}  # choice index -> streamed deltas
        self.chars = 0
        self.splitter: EventSplitter | None = None
        self.frame: Frame | None = None  # the stream's usual event but for its text (deltas)
        self.learn = LEARN  # events of choice 0 still to try a frame on

    async def __call__(self, message: Message) -> None:
        await self._send(message)  # the client's first: what follows is bookkeeping
        if message["type"] == "http.response.body":
            body = message.get("body", b"")
            if body:
                self._hash.update(body)
                self.size += len(body)
                if self.mode == _JSON:
                    self._copy(body)
                elif self.mode == _SSE:
                    self._events(body)
        elif message["type"] == "http.response.start":
            self._start(message)

    def receipt(self) -> dict[str, Any]:
        """``{"sha256": hex, "bytes": N}`` of the body served so far."""
        return {"sha256": self._hash.hexdigest(), "bytes": self.size}

    def output(self) -> bytes | list[str] | None:
        """What the recorder makes texts of (``texts``): the JSON body's copy, the streamed
        texts, or None when the response carried no text guardrail can read."""
        if self.copy is not None:
            return bytes(self.copy)
        if self.parts:
            return ["".join(parts) for _, parts in sorted(self.parts.items())]
        return None

    def _start(self, message: Message) -> None:
        if not 200 <= message["status"] < 300:
            return
        kind = encoding = b""
        for name, value in message.get("headers", ()):
            name = name.lower()
            if name == b"content-type":
                kind = value.lower()
            elif name == b"content-encoding":
                encoding = value.strip().lower()
        if encoding not in (b"", b"identity"):
            return  # compressed: its bytes are hashed as served, its text is not read
        if kind.startswith(b"text/event-stream"):
            self.mode, self.splitter = _SSE, EventSplitter()
        elif b"json" in kind:
            self.mode, self.copy = _JSON, bytearray()

    def _copy(self, body: bytes) -> None:
        copy = self.copy
        assert copy is not None
        if len(copy) + len(body) > JSON_MAX:
            self.mode, self.copy = _HASH, None
            return
        copy += body

    def _events(self, body: bytes) -> None:
        splitter = self.splitter
        assert splitter is not None
        text = None
        if not splitter.tail and self.frame is not None:
            text = _framed(self.frame, body)
        if text is not None:
            # The usual chunk of this stream: its text read from its frame, nothing parsed.
            if text:
                self.parts.setdefault(0, []).append(text)
                self.chars += len(text)
        elif (
            not splitter.tail
            and body[:7] == b"data: {"
            and body.find(b"\n") == len(body) - 2
            and body[-1:] == b"\n"
        ):
            self._single(body[6:-2])  # one single-line event: its JSON straight away
        else:
            for whole in splitter.feed(body):
                self._delta(payload(data_of(whole)))
                if self.chars >= TEXT_MAX:
                    break
        if len(splitter.tail) > EVENT_MAX or self.chars >= TEXT_MAX:
            self.mode, self.splitter = _HASH, None  # what was assembled so far is kept

    def _single(self, data: bytes) -> None:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if type(event) is not dict:
            return
        self._delta(event)
        if self.learn and self.frame is None:
            choices = event.get("choices")
            if (
                type(choices) is list
                and choices
                and type(choices[0]) is dict
                and choices[0].get("index", 0) == 0  # the frame's texts go to choice 0
            ):
                self.learn -= 1
                self.frame = frame_of(data, event)

    def _delta(self, event: dict[str, Any] | None) -> None:
        if event is None:
            return
        choices = event.get("choices")
        if type(choices) is list and len(choices) == 1:  # the usual delta: one choice
            choice = choices[0]
            delta = choice.get("delta") if type(choice) is dict else None
            if type(delta) is dict and choice.get("index", 0) == 0:
                text = delta.get("content")
                if type(text) is str and text:
                    self.parts.setdefault(0, []).append(text)
                    self.chars += len(text)
                return
        if isinstance(choices, list):
            for number, choice in enumerate(choices):
                if not isinstance(choice, dict):
                    continue
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                if isinstance(text, str) and text:
                    index = choice.get("index", number)
                    self.parts.setdefault(index if isinstance(index, int) else number, []).append(
                        text
                    )
                    self.chars += len(text)
        elif event.get("type") == "response.output_text.delta":
            text = event.get("delta")
            if isinstance(text, str) and text:
                self.parts.setdefault(0, []).append(text)
                self.chars += len(text)


def _framed(frame: Frame, body: bytes) -> str | None:
    """The text of ``body`` if it is one event of ``frame`` with a plain text; else None."""
    head, tail = frame
    end = len(body) - len(tail)
    if end < len(head) or not body.startswith(head) or not body.endswith(tail):
        return None
    raw = body[len(head) : end]
    if len(raw.translate(None, _UNPLAIN)) != len(raw):
        return None  # escapes to read: parsed
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


def texts(output: bytes | list[str]) -> list[str]:
    """The texts a response served: one per choice. A body that is not the JSON of a
    completion gives none (it was served all the same: its receipt says so)."""
    if isinstance(output, list):
        return output
    try:
        body = orjson.loads(output)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(body, dict):
        return []
    out: list[str] = []
    choices = body.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else choice.get("text")
            out += _strings(text)
    items = body.get("output")
    if isinstance(items, list):  # the responses API: message items of output_text parts
        for item in items:
            if isinstance(item, dict):
                out += _strings(item.get("content"))
    return [text for text in out if text]


def _strings(content: object) -> list[str]:
    """A message's content: a string, or a list of parts whose texts make one text."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        parts = [
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
        return ["\n".join(parts)] if parts else []
    return []
