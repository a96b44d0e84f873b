"""Capture: every message forwarded as it came, then hashed and read for its text."""

from __future__ import annotations

import gzip
import hashlib
import json
from typing import Any

import pytest

from guardrail.provenance.capture import JSON_MAX, TEXT_MAX, Capture, texts

ANSWER = "The harvest of a model's answers is traced by what they share with what was served."


def start(kind: bytes, status: int = 200, encoding: bytes | None = None) -> dict[str, Any]:
    headers = [(b"content-type", kind)]
    if encoding is not None:
        headers.append((b"content-encoding", encoding))
    return {"type": "http.response.start", "status": status, "headers": headers}


def body(data: bytes, more: bool) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def served(messages: list[dict[str, Any]]) -> tuple[Capture, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    capture = Capture(send)
    for message in messages:
        await capture(message)
    return capture, sent


def completion(*answers: str) -> bytes:
    choices = [
        {"index": i, "message": {"role": "assistant", "content": a}} for i, a in enumerate(answers)
    ]
    return json.dumps({"id": "c", "object": "chat.completion", "choices": choices}).encode()


def sse(deltas: list[tuple[int, str]]) -> bytes:
    events = [
        {"choices": [{"index": i, "delta": {"content": d}, "finish_reason": None}]}
        for i, d in deltas
    ]
    out = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return out + b"data: [DONE]\n\n"


async def test_a_json_body_split_anywhere_gives_its_choices_and_its_receipt():
    raw = completion(ANSWER, "A second choice, served in the same response as the first.")
    messages = [start(b"application/json")]
    messages += [body(c, True) for c in chunks(raw, 7)] + [body(b"", False)]
    capture, sent = await served(messages)
    assert [m is o for m, o in zip(sent, messages, strict=True)] == [True] * len(messages)
    output = capture.output()
    assert isinstance(output, bytes)
    assert texts(output) == [ANSWER, "A second choice, served in the same response as the first."]
    assert capture.receipt() == {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}


async def test_an_event_stream_split_mid_event_assembles_each_choice():
    words = ANSWER.split(" ")
    deltas = [(0, w + " ") for w in words] + [(1, "other "), (1, "choice")]
    raw = sse(deltas)
    messages = [start(b"text/event-stream; charset=utf-8")]
    messages += [body(c, True) for c in chunks(raw, 13)] + [body(b"", False)]
    capture, sent = await served(messages)
    assert b"".join(m.get("body", b"") for m in sent) == raw
    assert capture.output() == [ANSWER + " ", "other choice"]
    assert capture.receipt()["sha256"] == hashlib.sha256(raw).hexdigest()


async def test_completions_and_responses_shapes():
    legacy = json.dumps({"choices": [{"text": ANSWER, "index": 0}]}).encode()
    assert texts(legacy) == [ANSWER]
    parts = [{"type": "output_text", "text": ANSWER}]
    responses = json.dumps({"output": [{"type": "message", "content": parts}]}).encode()
    assert texts(responses) == [ANSWER]
    stream = b"".join(
        b"data: "
        + json.dumps({"type": "response.output_text.delta", "delta": w}).encode()
        + b"\n\n"
        for w in ("one ", "two")
    )
    capture, _ = await served([start(b"text/event-stream"), body(stream, False)])
    assert capture.output() == ["one two"]


@pytest.mark.parametrize(
    "messages",
    [
        [
            start(b"application/json", encoding=b"gzip"),
            body(gzip.compress(completion(ANSWER)), False),
        ],
        [start(b"text/plain"), body(ANSWER.encode(), False)],
        [start(b"application/json", status=500), body(completion(ANSWER), False)],
        [start(b"application/octet-stream"), body(b"\x00\xff" * 100, False)],
    ],
    ids=["compressed", "plain text", "error status", "binary"],
)
async def test_what_is_not_a_readable_completion_is_hashed_only(messages):
    capture, sent = await served(messages)
    assert sent == messages
    assert capture.output() is None
    assert capture.receipt()["bytes"] == len(messages[1]["body"])


@pytest.mark.parametrize(
    "raw", [b'{"choices": [{"message": {"content": "cut', b"[1, 2]", b"\xff\xfe", b"null"]
)
async def test_a_malformed_json_body_gives_no_text(raw):
    capture, sent = await served([start(b"application/json"), body(raw, False)])
    assert sent[1]["body"] == raw
    output = capture.output()
    assert output == raw and texts(raw) == []


async def test_bounds_a_large_json_body_is_hashed_only_and_a_long_stream_stops_growing():
    big = b'{"choices": [{"message": {"content": "' + b"x " * JSON_MAX + b'"}}]}'
    capture, _ = await served(
        [start(b"application/json"), *(body(c, True) for c in chunks(big, 65536)), body(b"", False)]
    )
    assert capture.output() is None and capture.receipt()["bytes"] == len(big)
    deltas = [(0, "word " * 100)] * (TEXT_MAX // 500 + 10)
    capture, _ = await served([start(b"text/event-stream"), body(sse(deltas), False)])
    output = capture.output()
    assert isinstance(output, list) and TEXT_MAX <= len(output[0]) < TEXT_MAX + 1000


async def test_events_one_a_message_and_malformed_events_in_a_stream():
    good = sse([(0, "one "), (0, "two")]).split(b"\n\n")[:2]
    messages = [
        start(b"text/event-stream"),
        body(good[0] + b"\n\n", True),
        body(b"data: {not json\n\n", True),  # skipped, the stream goes on
        body(b'data: {"choices": 3}\n\n', True),
        body(b"event: ping\ndata: {}\n\n", True),
        body(good[1] + b"\n\n", True),
        body(b"data: [DONE]\n\n", False),
    ]
    capture, sent = await served(messages)
    assert sent == messages
    assert capture.output() == ["one two"]


async def test_texts_read_from_the_frame_equal_the_parsed_ones_escapes_and_choices_included():
    deltas = [(0, "Caf\u00e9 "), (0, "au "), (1, "second "), (0, 'say "hi"'), (0, "\nnext ")]
    deltas += [(0, f"w{i} ") for i in range(20)] + [(1, "choice"), (0, "\\end")]
    framed = [
        b"data: "
        + json.dumps(
            {"id": "x", "choices": [{"index": i, "delta": {"content": d}}]}, ensure_ascii=False
        ).encode()
        + b"\n\n"
        for i, d in deltas
    ]
    capture, _ = await served(
        [start(b"text/event-stream"), *(body(e, True) for e in framed), body(b"", False)]
    )
    assert capture.frame is not None  # most of these were read without parsing
    expected = ["".join(d for i, d in deltas if i == n) for n in (0, 1)]
    assert capture.output() == expected
