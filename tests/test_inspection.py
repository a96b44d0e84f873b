"""Reading an inspected body: whole, or, when it is too large, the prompt in its head."""

from __future__ import annotations

import json

import pytest
from starlette.types import Message

from guardrail.inspection import HEAD_PROMPT_MAX, parse_head, parse_request, read_body
from guardrail.metering import CHAT, COMPLETIONS, OPENAI, RESPONSES


def _receiver(chunks: list[bytes]):  # type: ignore[no-untyped-def]
    messages: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive


async def test_a_body_over_the_limit_keeps_its_head_and_replays_every_byte() -> None:
    chunks = [b"a" * 600, b"b" * 600, b"c" * 600]
    raw, replay = await read_body(_receiver(chunks), 1000)
    assert raw is None
    assert replay.head == b"a" * 600 + b"b" * 400  # what was read, up to the limit
    replayed = []
    while True:
        message = await replay()
        replayed.append(message["body"])
        if not message["more_body"]:
            break
    assert replayed == chunks


async def test_a_body_that_fits_has_no_head() -> None:
    raw, replay = await read_body(_receiver([b"{}"]), 1000)
    assert raw == b"{}" and replay.head == b""


def _cut(body: dict[str, object], at: int) -> bytes:
    return json.dumps(body).encode()[:at]


def test_the_head_of_a_chat_body_gives_its_prompt_text() -> None:
    body = {
        "model": "m-1",
        "messages": [
            {"role": "system", "content": 'be "brief"'},
            {"role": "user", "content": [{"type": "text", "text": "step by step\n"}]},
        ],
        "junk": "x" * 1000,
    }
    request = parse_head(_cut(body, 400), CHAT)
    assert request is not None and request.partial and request.body == {}
    assert request.prompt == 'be "brief"\nstep by step\n'
    assert request.model == "m-1" and request.max_tokens is None


def test_a_string_cut_short_is_read_up_to_the_cut() -> None:
    text = 'héllo "wörld" \u00e9\n' * 4
    head = json.dumps({"prompt": text}).encode()
    for end in range(12, len(head)):  # wherever the cut falls: in an escape, in a character
        request = parse_head(head[:end], COMPLETIONS)
        prompt = "" if request is None else request.prompt
        assert text.startswith(prompt) and len(prompt) >= (end - 12) // 6  # \\u00e9: 6 bytes


@pytest.mark.parametrize(
    ("meter", "expected"),
    [
        (CHAT, "from messages"),
        (COMPLETIONS, ""),
        # a head is scanned, not parsed: a response's input items hold "content" too, so a
        # responses head reads every content string (more text for the signals, never less)
        (RESPONSES, "from messages\nfrom input"),
        (OPENAI, "from messages\nfrom input"),
    ],
)
def test_the_head_is_read_as_the_shape(meter: object, expected: str) -> None:
    head = _cut({"input": "from input", "messages": [{"content": "from messages"}]}, 10_000)
    request = parse_head(head, meter)  # type: ignore[arg-type]
    prompt = "" if request is None else request.prompt
    assert sorted(prompt.split("\n")) == sorted(expected.split("\n"))


def test_a_head_without_prompt_text_is_none_and_a_huge_one_is_bounded() -> None:
    assert parse_head(b'{"model": "m", "junk": "' + b"x" * 5000, CHAT) is None
    head = _cut({"messages": [{"content": "y" * 3 * HEAD_PROMPT_MAX}]}, 2 * HEAD_PROMPT_MAX)
    request = parse_head(head, CHAT)
    assert request is not None and len(request.prompt) == HEAD_PROMPT_MAX


def test_a_parsed_body_reads_the_output_its_shape_honours() -> None:
    body = b'{"input": "x", "messages": [], "max_tokens": 1}'
    request = parse_request(body, RESPONSES)
    assert request is not None and request.prompt == "x" and request.max_tokens is None
    request = parse_request(b'{"input": "x", "max_output_tokens": 7}', RESPONSES)
    assert request is not None and request.max_tokens == 7
