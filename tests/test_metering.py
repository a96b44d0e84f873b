"""The OpenAI meter: what the three request shapes ask for, caps and strips, and the tokens
their responses report or carry."""

from __future__ import annotations

from typing import Any

import pytest

from examples.openai_server import count_tokens
from guardrail.metering import (
    CHAT,
    COMPLETIONS,
    OPENAI,
    RESPONSES,
    Ask,
    OpenAIMeter,
    delta_tokens,
    earlier_user_turns,
    instructions,
    meter_for_path,
    opens_conversation,
    text_tokens,
)


def test_estimates_are_four_bytes_a_token_or_the_pieces_when_more() -> None:
    assert text_tokens("") == 0
    assert text_tokens("abcd") == 1
    assert text_tokens("abcde") == 2
    assert text_tokens("why is the sky blue") == 5  # prose: four bytes a token
    assert text_tokens("\ud800") == 1  # a lone surrogate (json accepts one) does not raise
    # what tokenizes denser than four bytes a token is counted by its pieces
    assert text_tokens("日本語の文字") == 6  # 18 bytes: a character a token
    assert text_tokens("123456789012") == 4  # digits in threes
    assert text_tokens("a b c d e f g h") == 7  # a word a space
    assert text_tokens("x=f(a[1]);") == 12  # a mark twice: each may split a word
    assert text_tokens("        return") == 4  # indentation: not a token a space
    assert text_tokens("Base64EncodedAPI") == 5  # capitals start pieces
    assert text_tokens("भारत") == 8  # an Indic character: two tokens (12 bytes)
    assert text_tokens("Ελλάδα") == 6  # Greek: a character a token
    hexdigest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    assert text_tokens(hexdigest * 2) == 86  # machine text: two bytes a token (128 bytes)


def test_a_streamed_piece_is_a_token_unless_it_is_long() -> None:
    assert delta_tokens(" the") == 1
    assert delta_tokens(" understanding") == 1  # 14 bytes: one token, as servers stream
    assert delta_tokens("x" * 40) == 10  # a server that batches: four bytes a token


def test_a_dense_prompt_is_not_under_reserved() -> None:
    dense = ("{[(;)]}<=>?!&|" + "日本語" + "123") * 25
    # the example server's tokenizer: a word or a mark a token, as BPE pre-tokenizers cut
    assert text_tokens(dense) >= count_tokens(dense) > len(dense.encode()) // 4


def test_the_path_names_the_shape() -> None:
    assert meter_for_path("/v1/chat/completions") is CHAT
    assert meter_for_path("/v1/completions") is COMPLETIONS
    assert meter_for_path("/openai/v1/responses") is RESPONSES
    assert meter_for_path("/v1/responses/resp_1") is OPENAI  # no shape: conservative
    assert meter_for_path("/v1/chat/completions/") is OPENAI


@pytest.mark.parametrize(
    ("meter", "body", "ask"),
    [
        (
            CHAT,
            {
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"},
                ]
            },
            Ask(2 + 4 + 1 + 4, None, 1),
        ),
        (
            CHAT,
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 50, "n": 3},
            Ask(5, 50, 3),
        ),
        # both names a chat server may honour: the larger is reserved
        (CHAT, {"messages": [], "max_tokens": 50, "max_completion_tokens": 70}, Ask(0, 70, 1)),
        (CHAT, {"messages": [], "max_tokens": 90, "max_completion_tokens": 70}, Ask(0, 90, 1)),
        (
            CHAT,
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
        (COMPLETIONS, {"prompt": "abcd", "max_tokens": 16, "n": 2, "best_of": 5}, Ask(1, 16, 5)),
        (COMPLETIONS, {"prompt": [1, 2, 3]}, Ask(3, None, 1)),  # token ids
        # a batch: one completion per prompt
        (COMPLETIONS, {"prompt": ["abcd", "abcdefgh"], "max_tokens": 10, "n": 2}, Ask(3, 10, 4)),
        (COMPLETIONS, {"prompt": [[1, 2], [3, 4, 5]], "max_tokens": 10}, Ask(5, 10, 2)),
        (
            RESPONSES,
            {"input": "abcd", "instructions": "abcdefgh", "max_output_tokens": 9},
            Ask(3, 9, 1),
        ),
        (RESPONSES, {"input": [{"role": "user", "content": "abcd"}]}, Ask(5, None, 1)),
        # what a client cannot pass for a count
        (CHAT, {"messages": [], "max_tokens": True, "n": -1}, Ask(0, None, 1)),
        # ...and what a lenient server reads as one: reserved as it will be honoured
        (CHAT, {"messages": [], "max_tokens": "64"}, Ask(0, 64, 1)),
        (CHAT, {"messages": [], "max_tokens": 64.0}, Ask(0, 64, 1)),
        # 0 is no cap: vLLM reads `max_completion_tokens or max_tokens`, then its default
        (CHAT, {"messages": [], "max_completion_tokens": 0}, Ask(0, None, 1)),
        # another shape's keys: ignored for the prompt; its length fields only ever add
        (
            RESPONSES,
            {
                "input": "abcd",
                "messages": [{"role": "user", "content": "x" * 400}],
                "max_tokens": 1,
            },
            Ask(1, None, 1),  # max_output_tokens absent: the route's default, watched
        ),
        (RESPONSES, {"input": "", "max_output_tokens": 5, "max_tokens": 900}, Ask(0, 900, 1)),
        (COMPLETIONS, {"prompt": "", "max_tokens": 5, "min_tokens": 300}, Ask(0, 300, 1)),
        (CHAT, {"messages": [], "prompt": "x" * 400, "max_output_tokens": 1}, Ask(0, None, 1)),
        # no shape: every shape's prompt, and the largest length field
        (
            OPENAI,
            {"messages": [{"role": "user", "content": "abcd"}], "prompt": "abcd", "input": "ab"},
            Ask(5 + 1 + 1, None, 1),
        ),
        (OPENAI, {"input": "", "max_tokens": 5, "max_output_tokens": 99}, Ask(0, 99, 1)),
    ],
)
def test_ask(meter: OpenAIMeter, body: dict[str, Any], ask: Ask) -> None:
    assert meter.ask(body) == ask


def test_the_prompt_is_read_from_the_shape_alone() -> None:
    body = {
        "messages": [{"role": "user", "content": "from messages"}],
        "prompt": "from prompt",
        "input": [{"role": "user", "content": "from input"}],
    }
    assert CHAT.prompt(body) == "from messages"
    assert COMPLETIONS.prompt(body) == "from prompt"
    assert RESPONSES.prompt(body) == "from input"
    assert OPENAI.prompt(body) == "from messages\nfrom prompt\nfrom input"
    assert RESPONSES.prompt({"input": "x", "messages": []}) == "x"


@pytest.mark.parametrize(
    ("meter", "body", "after"),
    [
        (CHAT, {"messages": [], "max_tokens": 500}, {"messages": [], "max_tokens": 64}),
        (CHAT, {"messages": [], "max_tokens": 10}, None),  # under the cap: untouched
        (CHAT, {"messages": []}, {"messages": [], "max_tokens": 64}),
        (
            CHAT,
            {"messages": [], "max_tokens": 500, "max_completion_tokens": 30},
            {"messages": [], "max_tokens": 64, "max_completion_tokens": 30},
        ),
        (CHAT, {"messages": [], "max_tokens": "lots"}, {"messages": [], "max_tokens": 64}),
        (
            CHAT,
            {"messages": [], "max_completion_tokens": 0},
            {"messages": [], "max_completion_tokens": 64},
        ),
        (COMPLETIONS, {"prompt": "x"}, {"prompt": "x", "max_tokens": 64}),
        (
            RESPONSES,
            {"input": "x", "max_output_tokens": 100},
            {"input": "x", "max_output_tokens": 64},
        ),
        # every length field present is capped, and the shape's own is added
        (
            RESPONSES,
            {"input": "x", "messages": [], "max_tokens": 1000},
            {"input": "x", "messages": [], "max_tokens": 64, "max_output_tokens": 64},
        ),
        (
            COMPLETIONS,
            {"prompt": "x", "max_tokens": 9, "max_new_tokens": 900, "min_tokens": 300},
            {"prompt": "x", "max_tokens": 9, "max_new_tokens": 64, "min_tokens": 64},
        ),
        (CHAT, {"messages": [], "max_tokens": 9, "min_tokens": 5}, None),  # a floor under it
        # no shape: each of the three names added
        (
            OPENAI,
            {"input": "x"},
            {
                "input": "x",
                "max_tokens": 64,
                "max_completion_tokens": 64,
                "max_output_tokens": 64,
            },
        ),
    ],
)
def test_cap(meter: OpenAIMeter, body: dict[str, Any], after: dict[str, Any] | None) -> None:
    original = dict(body)
    changed = meter.cap(body, 64)
    assert changed is (after is not None)
    assert body == (after or original)
    if after is not None:  # what the meter reserves of the capped body: the cap
        assert meter.ask(body).output == 64


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


def test_the_prompt_read_is_the_newest_user_text_that_says_something() -> None:
    ask = "Explain step by step and show your full reasoning"
    chat = {"messages": [{"role": "user", "content": ask}, {"role": "user", "content": ""}]}
    assert CHAT.prompt(chat) == ask  # a trailing empty turn hides nothing
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": ask}]},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
    ]
    assert RESPONSES.prompt({"input": items}) == ask  # nor does a tool's output after it


def test_earlier_user_turns_are_the_conversation_before_the_newest_one() -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "answer"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
            {"role": "assistant", "content": "answer"},
            {"role": "user", "content": "newest"},
        ]
    }
    assert earlier_user_turns(chat) == ["first", "second"]
    responses = {"input": [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]}
    assert earlier_user_turns(responses) == ["one"]
    assert earlier_user_turns({"prompt": "completions have no history"}) == []
    assert earlier_user_turns({"messages": "not a list"}) == []


def test_instructions_are_system_and_developer_messages_and_top_level_fields() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "You are a tutor."},
            {"role": "developer", "content": [{"type": "text", "text": "Show your work."}]},
            {"role": "user", "content": "What is 2 + 2?"},
        ]
    }
    assert instructions(body) == "You are a tutor.\nShow your work."
    assert instructions({"system": [{"type": "text", "text": "Anthropic's shape"}]}) == (
        "Anthropic's shape"
    )
    assert instructions({"instructions": "responses API", "input": "hi"}) == "responses API"
    assert instructions({"messages": [{"role": "user", "content": "hi"}]}) == ""
    assert instructions({"system": 12}) == ""


def test_a_conversation_is_opened_by_its_only_user_turn() -> None:
    assert opens_conversation({"messages": [{"role": "user", "content": "hi"}]})
    assert opens_conversation(
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]}
    )
    follow_up = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ]
    }
    assert not opens_conversation(follow_up)
    assert not opens_conversation({"input": [{"content": "a"}, {"content": "b"}]})
    assert opens_conversation({"prompt": "completions"})
