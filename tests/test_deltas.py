"""The usual streamed chunk counted from its frame: never a count the parsed chunk would not
give, whatever the text (hypothesis), and no frame for a chunk that is not the usual one."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from guardrail.deltas import Frame, frame, framed_tokens
from guardrail.metering import CHAT
from guardrail.sse import payload

HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def chunk(content: str, *, spaced: bool = True, **extra: Any) -> bytes:
    event = {**HEAD, "choices": [{"index": 0, "delta": {"content": content}}], **extra}
    text = json.dumps(event) if spaced else orjson.dumps(event).decode()
    return b"data: " + text.encode() + b"\n\n"


def learned(body: bytes) -> Frame | None:
    data = body[6:-2]
    event = payload(data)
    assert event is not None
    return frame(data, event)


def parsed_tokens(body: bytes) -> int:
    event = payload(body[6:-2])
    return 0 if event is None else CHAT.streamed(event)


@given(text=st.text(), spaced=st.booleans())
def test_a_framed_count_is_the_parsed_count(text: str, spaced: bool) -> None:
    usual = learned(chunk(" the", spaced=spaced))
    assert usual is not None
    body = chunk(text, spaced=spaced)
    tokens = framed_tokens(usual, body)
    assert tokens is None or tokens == parsed_tokens(body)
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        assert tokens == parsed_tokens(body)  # plain text: the frame counts it


@given(junk=st.binary(max_size=40))
def test_bytes_that_are_not_the_frame_s_string_are_parsed(junk: bytes) -> None:
    usual = learned(chunk(" the"))
    assert usual is not None
    body = usual.head + junk + usual.tail
    tokens = framed_tokens(usual, body)
    if tokens is not None:  # taken from the frame: the chunk parses, to the same count or less
        event = payload(body[6:-2])
        assert event is None or CHAT.streamed(event) <= tokens


def test_a_text_that_imitates_the_frame_is_parsed() -> None:
    usual = learned(chunk(" the"))
    assert usual is not None
    sneaky = chunk('"}, "finish_reason": null}], "usage": {"total_tokens": 1}}')
    assert framed_tokens(usual, sneaky) is None
    assert framed_tokens(usual, chunk("x" * 100)) == 25
    assert framed_tokens(usual, chunk("")) == 0
    assert framed_tokens(usual, chunk(" the", model="other")) is None
    assert framed_tokens(usual, b"data: [DONE]\n\n") is None


def test_no_frame_for_chunks_that_are_not_the_usual_one() -> None:
    assert learned(chunk(" the")) is not None
    assert learned(chunk(" the", usage={"total_tokens": 3})) is None
    role = b'data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}\n\n'
    assert learned(role) is None
    two = {**HEAD, "choices": [{"delta": {"content": "a"}}, {"delta": {"content": "b"}}]}
    assert learned(b"data: " + orjson.dumps(two) + b"\n\n") is None
    nested = {**HEAD, "meta": {"content": "a"}, "choices": [{"delta": {"content": "a"}}]}
    assert learned(b"data: " + orjson.dumps(nested) + b"\n\n") is None  # two "content" keys
