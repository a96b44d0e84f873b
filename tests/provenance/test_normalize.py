"""Normalisation: the words survive reformatting, and only reformatting."""

from __future__ import annotations

import pytest

from guardrail.provenance.normalize import words

PLAIN = "The answer is 42 because the train leaves at noon and it does not stop"


@pytest.mark.parametrize(
    "variant",
    [
        PLAIN.upper(),
        "  The answer   is 42\n\nbecause the train\tleaves at noon and it does not stop  ",
        "## The answer is **42** because the _train_ leaves at `noon` and it does not stop",
        "1. The answer is 42\n2. because the train leaves at noon\n3) and it does not stop",
        "- The answer is 42\n* because the train leaves at noon\n+ and it does not stop",
        "> The answer is 42 because the train leaves at noon and it does not stop",
        "\u2022 The answer is 42 because the train leaves at noon and it does not stop",
        "```text\nThe answer is 42 because the train leaves at noon and it does not stop\n```",
        "The answer is 42, because the train leaves at noon; and it does not stop!",
        "\uff34\uff48\uff45 answer is \uff14\uff12 because the train leaves at noon and it does "
        "not stop",
    ],
)
def test_reformatting_leaves_the_words(variant: str):
    assert words(variant) == words(PLAIN)


def test_apostrophes_join_whatever_their_shape():
    assert words("don't") == words("don\u2019t") == words("DON'T") == [b"dont"]


def test_numbers_inside_the_text_stay():
    assert words("take 12 apples and 3 pears") == [
        b"take",
        b"12",
        b"apples",
        b"and",
        b"3",
        b"pears",
    ]


def test_the_unicode_path_agrees_with_the_ascii_path_on_ascii_words():
    text = "Step 1: read (the) file -- then *write* it; x=3"
    assert words(text + " caf\u00e9") == [*words(text), "caf\u00e9".encode()]


def test_scripts_other_than_latin_are_kept_as_words():
    assert words("\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!") == [
        "\u043f\u0440\u0438\u0432\u0435\u0442".encode(),
        "\u043c\u0438\u0440".encode(),
    ]
