"""The sketch: 48 bytes whose agreement estimates the Jaccard similarity of word trigrams."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail.errors import ProvenanceError
from guardrail.provenance import sketch as sketch_module
from guardrail.provenance.sketch import BINS, MAX_BYTES, MAX_WORDS, Sketcher, jaccard, matches
from guardrail.simulate import leaks

VOCAB = [f"w{i}" for i in range(3000)]


def _trigrams(ws: list[str]) -> set[tuple[str, ...]]:
    return {tuple(ws[i : i + 3]) for i in range(len(ws) - 2)}


def test_a_sketch_is_48_bytes_and_the_same_every_time():
    sketcher = Sketcher(b"key")
    text = " ".join(VOCAB[:200])
    assert sketcher.sketch(text) == Sketcher(b"key").sketch(text)
    assert len(sketcher.sketch(text) or b"") == BINS


def test_too_short_a_text_has_no_sketch():
    assert Sketcher().sketch("thanks, that helps") is None


def test_another_key_gives_unrelated_sketches():
    text = " ".join(VOCAB[:200])
    a, b = Sketcher(b"one").sketch(text), Sketcher(b"two").sketch(text)
    assert a is not None and b is not None
    assert matches(a, b) < 8


@pytest.mark.parametrize("keep", [0.95, 0.8, 0.6, 0.4])
def test_agreement_tracks_jaccard(keep: float):
    rng = random.Random(7)
    sketcher = Sketcher(b"k")
    errors = []
    for _ in range(60):
        base = [rng.choice(VOCAB) for _ in range(170)]
        other = [w if rng.random() < keep else rng.choice(VOCAB) for w in base]
        a, b = _trigrams(base), _trigrams(other)
        true = len(a & b) / len(a | b)
        sa, sb = sketcher.sketch(" ".join(base)), sketcher.sketch(" ".join(other))
        assert sa is not None and sb is not None
        errors.append(jaccard(matches(sa, sb)) - true)
    assert abs(statistics.mean(errors)) < 0.03  # unbiased
    assert statistics.pstdev(errors) < 0.1  # and about as noisy as 48 bins allow


def test_short_texts_compare_through_densified_bins():
    sketcher = Sketcher()
    text = " ".join(VOCAB[:12])  # 10 trigrams for 48 bins
    sketch = sketcher.sketch(text)
    assert sketch is not None and sketch == sketcher.sketch(text.upper())
    assert matches(sketch, sketcher.sketch(" ".join(VOCAB[100:112])) or b"") < 8


def test_parameters_round_trip_and_bad_ones_are_refused():
    sketcher = Sketcher(b"key", shingle=2)
    again = Sketcher.from_params(sketcher.params)
    text = " ".join(VOCAB[:100])
    assert again.shingle == 2 and again.sketch(text) == sketcher.sketch(text)
    with pytest.raises(ProvenanceError):
        Sketcher.from_params(b"\x29" + bytes(15))
    with pytest.raises(ProvenanceError):
        Sketcher(shingle=5)


WORD = st.text(
    st.characters(codec="utf-8", categories=["L", "N", "M", "S", "P", "Z", "Cc"]), min_size=1
)
SEPARATOR = st.sampled_from([" ", "  ", "\n", ", ", ". ", "\n- ", "\t", "\u00a0", " \u2014 ", "'"])


@st.composite
def _texts(draw: st.DrawFn) -> str:
    """Texts of words (ASCII or not, markup and punctuation among them) and raw strings."""
    if draw(st.booleans()):
        return draw(st.text())
    tokens = draw(st.lists(WORD | st.sampled_from(VOCAB[:20]), min_size=6, max_size=60))
    return "".join(word + draw(SEPARATOR) for word in tokens)


@settings(max_examples=300, deadline=None)
@given(text=_texts(), shingle=st.integers(1, 4))
def test_numpy_and_pure_python_make_the_same_sketch(text: str, shingle: int):
    pytest.importorskip("numpy")
    sketcher = Sketcher(b"oracle", shingle)
    assert sketcher.vectorised
    assert sketcher.sketch(text) == sketcher.sketch_reference(text)


@pytest.mark.parametrize("shingle", [1, 2, 3, 4])
def test_the_same_sketch_on_answers_and_at_the_limits(shingle: int):
    """~1 KB answers (most leave a bin empty: densified), a text past ``MAX_WORDS``, one past
    ``MAX_BYTES`` and one whose first word does not fit in it."""
    pytest.importorskip("numpy")
    rng = random.Random(shingle)
    texts = list(leaks.never_served(shingle, 60))
    texts += [" ".join(rng.choices(VOCAB[:9], k=rng.randint(8, 40))) for _ in range(30)]
    texts += [" ".join(rng.choices(VOCAB, k=n)) for n in (7, 8, 9, MAX_WORDS + 50)]
    texts += [" ".join(["x" * 5000] * 8), "y" * (MAX_BYTES + 10) + " " + " ".join(VOCAB[:20])]
    sketcher = Sketcher(b"reference", shingle)
    sketches = [sketcher.sketch(text) for text in texts]
    assert sketches == [sketcher.sketch_reference(text) for text in texts]
    assert sketches[-1] is None and sketches[-2] is None  # 6 words fit; none does
    assert sketches[-3] == sketcher.sketch(" ".join(texts[-3].split()[:MAX_WORDS]))


def test_without_numpy_the_sketches_are_the_same(monkeypatch: pytest.MonkeyPatch):
    text = " ".join(VOCAB[:300])
    vectorised = Sketcher(b"k").sketch(text)
    monkeypatch.setattr(sketch_module, "_vectorised", None)
    fallback = Sketcher(b"k")
    assert not fallback.vectorised
    assert fallback.sketch(text) == vectorised is not None


def test_parameters_of_the_earlier_sketch_are_refused():
    """Version 1 (crc32 lanes) wrote the shingle alone in the first byte."""
    with pytest.raises(ProvenanceError, match="sketch version 1, this guardrail makes version 2"):
        Sketcher.from_params(b"\x03" + bytes(15))
