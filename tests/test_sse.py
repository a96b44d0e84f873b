"""Whole SSE events out of arbitrary chunks, and the error event that ends a stream."""

from __future__ import annotations

import json

import pytest

from guardrail.sse import EventSplitter, data_of, error_event, payload

EVENTS = [
    b'data: {"a": 1}\n\n',
    b'data: {"b": 2}\r\n\r\n',
    b"event: x\ndata: line1\ndata: line2\n\n",
    b"data: [DONE]\n\n",
]
STREAM = b"".join(EVENTS)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, len(STREAM)])
def test_events_come_out_whole_however_the_stream_is_cut(size: int) -> None:
    splitter = EventSplitter()
    out: list[bytes] = []
    for i in range(0, len(STREAM), size):
        out += splitter.feed(STREAM[i : i + size])
    assert out == EVENTS
    assert splitter.tail == b""


def test_an_unfinished_event_is_held_back() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b'data: {"a": 1}\n\ndata: {"b"') == [b'data: {"a": 1}\n\n']
    assert splitter.tail == b'data: {"b"'
    assert splitter.feed(b": 2}\n") == []
    assert splitter.feed(b"\n") == [b'data: {"b": 2}\n\n']


def test_one_whole_event_is_passed_as_the_same_bytes() -> None:
    chunk = b'data: {"a": 1}\n\n'
    assert EventSplitter().feed(chunk)[0] is chunk


def test_data_of() -> None:
    assert data_of(b'data: {"a": 1}\n\n') == b'{"a": 1}'
    assert data_of(b"data:x\r\n\r\n") == b"x"
    assert data_of(b"event: x\ndata: line1\ndata: line2\n\n") == b"line1\nline2"
    assert data_of(b": a comment\n\n") is None
    assert payload(data_of(b"data: [DONE]\n\n")) is None
    assert payload(data_of(b"data: [1, 2]\n\n")) is None
    assert payload(data_of(b"data: {not json\n\n")) is None
    assert payload(data_of(b'data: {"a": 1}\n\n')) == {"a": 1}


def test_error_event_is_an_openai_error_then_done() -> None:
    text = error_event("budget spent", "rate_limit_exceeded").decode()
    first, done, rest = text.split("\n\n")
    assert json.loads(first.removeprefix("data: ")) == {
        "error": {
            "message": "budget spent",
            "type": "rate_limit_exceeded",
            "code": "rate_limit_exceeded",
            "param": None,
        }
    }
    assert done == "data: [DONE]" and rest == ""
