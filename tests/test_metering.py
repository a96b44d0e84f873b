"""The OpenAI meter: what the three request shapes ask for, caps and strips, and the tokens
their responses report or carry."""

from __future__ import annotations

from typing import Any

import pytest

from guardrail.metering import OPENAI, Ask, delta_tokens, text_tokens


def test_estimates_are_four_bytes_a_token_rounded_up() -> None:
    assert text_tokens("") == 0
    assert text_tokens("abcd") == 1
    assert text_tokens("abcde") == 2
    assert text_tokens("日本語") == 3  # 9 bytes: CJK counts heavier, as it tokenizes
    assert text_tokens("\ud800") == 1  # a lone surrogate (json accepts one) does not raise


def test_a_streamed_piece_is_a_token_unless_it_is_long() -> None:
    assert delta_tokens(" the") == 1
    assert delta_tokens(" understanding") == 1  # 14 bytes: one token, as servers stream
    assert delta_tokens("x" * 40) == 10  # a server that batches: four bytes a token


@pytest.mark.parametrize(
    ("body", "ask"),
    [
        (
            {
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"},
                ]
            },
            Ask(2 + 4 + 1 + 4, None, 1),
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 50, "n": 3},
            Ask(5, 50, 3),
        ),
        # max_completion_tokens is the newer name and wins
        ({"messages": [], "max_tokens": 50, "max_completion_tokens": 70}, Ask(0, 70, 1)),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "abcdefgh"}, {"type": "image_url"}],
                    }
                ]
            },
            Ask(2 + 4, None, 1),
        ),
        ({"prompt": "abcd", "max_tokens": 16, "n": 2, "best_of": 5}, Ask(1, 16, 5)),
        ({"prompt": [1, 2, 3]}, Ask(3, None, 1)),  # token ids
        # a batch: one completion per prompt
        ({"prompt": ["abcd", "abcdefgh"], "max_tokens": 10, "n": 2}, Ask(3, 10, 4)),
        ({"prompt": [[1, 2], [3, 4, 5]], "max_tokens": 10}, Ask(5, 10, 2)),
        ({"input": "abcd", "instructions": "abcdefgh", "max_output_tokens": 9}, Ask(3, 9, 1)),
        ({"input": [{"role": "user", "content": "abcd"}]}, Ask(5, None, 1)),
        # what a client cannot pass for a count
        ({"messages": [], "max_tokens": True, "n": -1}, Ask(0, None, 1)),
        ({"messages": [], "max_tokens": "64"}, Ask(0, None, 1)),
    ],
)
def test_ask(body: dict[str, Any], ask: Ask) -> None:
    assert OPENAI.ask(body) == ask


@pytest.mark.parametrize(
    ("body", "after"),
    [
        ({"messages": [], "max_tokens": 500}, {"messages": [], "max_tokens": 64}),
        ({"messages": [], "max_tokens": 10}, None),  # under the cap: untouched
        ({"messages": []}, {"messages": [], "max_tokens": 64}),
        (
            {"messages": [], "max_tokens": 500, "max_completion_tokens": 30},
            {"messages": [], "max_tokens": 64, "max_completion_tokens": 30},
        ),
        ({"messages": [], "max_tokens": "lots"}, {"messages": [], "max_tokens": 64}),
        ({"prompt": "x"}, {"prompt": "x", "max_tokens": 64}),
        ({"input": "x", "max_output_tokens": 100}, {"input": "x", "max_output_tokens": 64}),
    ],
)
def test_cap(body: dict[str, Any], after: dict[str, Any] | None) -> None:
    original = dict(body)
    changed = OPENAI.cap(body, 64)
    assert changed is (after is not None)
    assert body == (after or original)


def test_strip() -> None:
    body = {"messages": [], "logprobs": True, "top_logprobs": 5, "n": 4}
    assert OPENAI.strip(body, frozenset({"logprobs"}))
    assert body == {"messages": [], "n": 4}
    assert OPENAI.strip(body, frozenset({"n"}))
    assert body == {"messages": []}
    assert not OPENAI.strip({"messages": [], "n": 1}, frozenset({"n", "logprobs"}))


@pytest.mark.parametrize(
    ("payload", "total"),
    [
        ({"usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}, 12),
        ({"usage": {"prompt_tokens": 5, "completion_tokens": 7}}, 12),
        ({"usage": {"input_tokens": 3, "output_tokens": 4}}, 7),  # responses
        ({"type": "response.completed", "response": {"usage": {"total_tokens": 9}}}, 9),
        ({"type": "response.created", "response": {"usage": None}}, None),
        ({"choices": [], "usage": None}, None),
        ({"usage": {"total_tokens": -3}}, None),
        ({"usage": "lots"}, None),
    ],
)
def test_usage(payload: dict[str, Any], total: int | None) -> None:
    assert OPENAI.usage(payload) == total


@pytest.mark.parametrize(
    ("payload", "tokens"),
    [
        ({"choices": [{"delta": {"content": " the"}}]}, 1),
        ({"choices": [{"delta": {"role": "assistant", "content": ""}}]}, 0),
        ({"choices": [{"delta": {"reasoning_content": " so"}}, {"delta": {"content": " a"}}]}, 2),
        (
            {"choices": [{"delta": {"tool_calls": [{"function": {"arguments": '{"a'}}]}}]},
            1,
        ),
        ({"choices": [{"text": " once"}]}, 1),  # completions
        ({"type": "response.output_text.delta", "delta": " hi"}, 1),
        ({"type": "response.created", "delta": "not output"}, 0),
        ({"choices": [None, {"delta": None}]}, 0),
    ],
)
def test_streamed(payload: dict[str, Any], tokens: int) -> None:
    assert OPENAI.streamed(payload) == tokens
