"""The batched sketch: ``sketch_many`` gives every text exactly ``sketch_reference``'s bytes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.provenance.test_sketch import VOCAB, _texts

from guardrail.provenance import sketch as sketch_module
from guardrail.provenance.sketch import BINS, MAX_BYTES, MAX_WORDS, MIN_WORDS, OFFSETS, Sketcher
from guardrail.simulate import leaks

pytest.importorskip("numpy")

from guardrail.provenance.sketch_numpy import BATCH_BYTES


@pytest.fixture(scope="module")
def answers() -> list[str]:
    return list(leaks.never_served(5, 300))


@pytest.mark.parametrize("shingle", [1, 2, 3, 4])
def test_batches_of_any_size_make_the_reference_sketches(answers: list[str], shingle: int):
    sketcher = Sketcher(b"batched", shingle)
    expected = [sketcher.sketch_reference(text) for text in answers]
    assert sum(len(t.encode()) for t in answers[:64]) > BATCH_BYTES  # 64 and more: split
    for size in (1, 2, 8, 64, len(answers)):
        got: list[bytes | None] = []
        for start in range(0, len(answers), size):
            got += sketcher.sketch_many(answers[start : start + size])
        assert got == expected, f"batches of {size}"


def _one_word(word: str) -> str:
    return " ".join([word] * 12)


def test_the_edge_cases_in_one_batch():
    rng = random.Random(4)
    texts = [
        "",
        " ".join(VOCAB[: MIN_WORDS - 1]),  # too short: None
        " ".join(VOCAB[10 : 10 + MIN_WORDS]),  # just long enough
        " ".join(rng.choices(VOCAB, k=MAX_WORDS + 300)),  # the words past MAX_WORDS ignored
        " ".join(VOCAB[20:40]),
        "z" * (MAX_BYTES + 5) + " " + " ".join(VOCAB[:30]),  # no word in MAX_BYTES: None
        " ".join(rng.choices(VOCAB, k=MAX_BYTES // 4)),  # past MAX_BYTES: cut at a word
        # not ASCII (NFKC folds the ligature and the full-width letters)
        "Ça coûte 12 € — naïve Straße, ﬁnal \uff21\uff22\uff23: 東京 の 天気 は 晴れ です ね",
        " ".join(VOCAB[20:40]),  # the same text twice in one batch
        "   ",
        *(_one_word(word) for word in VOCAB[100:140]),  # one hash: every bin borrows or wraps
        " ".join(VOCAB[50:60]),
    ]
    for shingle in (1, 3, 4):
        sketcher = Sketcher(b"edges", shingle)
        got = sketcher.sketch_many(texts)
        assert got == [sketcher.sketch_reference(text) for text in texts]
        assert got[0] is None and got[1] is None and got[5] is None and got[9] is None
        assert None not in got[2:5] and got[4] == got[8]
        assert got[3] == sketcher.sketch(" ".join(texts[3].split()[:MAX_WORDS]))
        for sketch in got[10:-1]:  # the one hash, less each bin's offset, in every bin
            assert sketch is not None
            hashes = {(byte - offset) % 256 for byte, offset in zip(sketch, OFFSETS, strict=True)}
            assert len(hashes) == 1


def _of_length(size: int, seed: int) -> str:
    """Words of VOCAB, ``size`` characters in all."""
    rng = random.Random(seed)
    text = ""
    while len(text) < size - 12:
        text += rng.choice(VOCAB) + " "
    return text + "x" * (size - len(text))


@pytest.mark.parametrize("more", [0, 1])
def test_texts_that_fill_a_batch_to_the_byte(more: int):
    """Joined and padded, the first two take ``BATCH_BYTES`` + 2 bytes (one batch) or one
    more (two batches); then a text of ``MAX_BYTES``."""
    half = BATCH_BYTES // 2
    sizes = [half, BATCH_BYTES - half - 1 + more, MAX_BYTES, 900]
    texts = [_of_length(size, seed) for seed, size in enumerate(sizes)]
    sketcher = Sketcher(b"full")
    assert sketcher.sketch_many(texts) == [sketcher.sketch_reference(text) for text in texts]


def test_a_batch_of_nothing_and_of_unsketchable_texts():
    sketcher = Sketcher(b"k")
    assert sketcher.sketch_many([]) == []
    assert sketcher.sketch_many(["", "a b", "   "]) == [None, None, None]


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(_texts(), max_size=12), shingle=st.integers(1, 4))
def test_any_batch_makes_the_reference_sketches(texts: list[str], shingle: int):
    sketcher = Sketcher(b"oracle", shingle)
    assert sketcher.sketch_many(texts) == [sketcher.sketch_reference(text) for text in texts]


def test_without_numpy_the_batch_is_sketched_text_by_text(monkeypatch: pytest.MonkeyPatch):
    texts = [" ".join(VOCAB[i : i + 40]) for i in range(0, 400, 40)] + ["too short"]
    vectorised = Sketcher(b"k").sketch_many(texts)
    monkeypatch.setattr(sketch_module, "_vectorised", None)
    fallback = Sketcher(b"k")
    assert not fallback.vectorised
    assert fallback.sketch_many(texts) == vectorised
    assert vectorised[-1] is None and all(len(s or b"") == BINS for s in vectorised[:-1])
