"""The usual streamed chunk, counted without parsing it.

A chat completion streams a token an event, and the events of one stream differ in the delta's
text alone: ``id``, ``created``, ``model`` and the rest are the same bytes each time. Once one
such event has been parsed, the bytes around its text (its ``Frame``) are kept; an event made
of the same bytes around a string with nothing to unescape is that event with another text, so
its tokens (``delta_tokens``) follow from the string's size in bytes: no JSON is parsed. That
is sound because the frame's head leaves a JSON lexer inside a string, a run of bytes without
a quote, a backslash or a line break keeps it there, and the tail closes the string and the
document exactly as in the event that was parsed. Anything else is parsed as before.

orjson costs ~0.9 µs a chunk and the meter's walk over it ~0.4 µs; the frame's check ~0.2 µs.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import orjson

#: The delta's text: its key, then the opening quote of its value.
_CONTENT = re.compile(rb'"content"\s*:\s*"')
#: Bytes a text read from its frame may not hold: a quote, a backslash, a line break.
_UNPLAIN = b'"\\\r\n'
#: The rest of a JSON string, from after its opening quote to its closing quote.
_STRING_REST = re.compile(rb'(?:[^"\\\x00-\x1f]|\\.)*"')


class Frame(NamedTuple):
    """An event of one stream but for its text: ``head`` + text + ``tail``."""

    head: bytes  # from "data: " to the text's opening quote
    tail: bytes  # from the closing quote to the blank line that ends the event


def frame(data: bytes, event: dict[str, Any]) -> Frame | None:
    """The frame of a single-line event whose data (``data``, parsed: ``event``) is a chat
    chunk with one choice whose delta is its text alone, reporting no usage; else None."""
    if event.get("usage") is not None or "response" in event:
        return None
    choices = event.get("choices")
    if type(choices) is not list or len(choices) != 1 or type(choices[0]) is not dict:
        return None
    delta = choices[0].get("delta")
    if type(delta) is not dict or len(delta) != 1 or type(delta.get("content")) is not str:
        return None
    found = list(_CONTENT.finditer(data))
    if len(found) != 1:
        return None
    start = found[0].end()
    rest = _STRING_REST.match(data, start)
    if rest is None:
        return None
    head, tail = data[:start], data[rest.end() - 1 :]
    # The same event with another text, parsed: proof that the text found is the delta's.
    try:
        probe = orjson.loads(head + b"x" + tail)
    except orjson.JSONDecodeError:
        return None
    if probe != {**event, "choices": [{**choices[0], "delta": {"content": "x"}}]}:
        return None
    return Frame(b"data: " + head, tail + b"\n\n")


def framed_tokens(frame: Frame, body: bytes) -> int | None:
    """The output tokens of ``body`` if it is one event of ``frame`` (what the meter's
    ``delta_tokens`` gives its text: one up to 16 bytes, else four bytes a token); else None."""
    head, tail = frame
    size = len(body) - len(head) - len(tail)
    if size < 0 or not body.startswith(head) or not body.endswith(tail):
        return None
    if len(body[len(head) : len(body) - len(tail)].translate(None, _UNPLAIN)) != size:
        return None  # escapes to read, or not this frame's string: parsed
    return 0 if not size else 1 if size <= 16 else (size + 3) // 4
