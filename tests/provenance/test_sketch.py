"""The sketch: 48 bytes whose agreement estimates the Jaccard similarity of word trigrams."""

from __future__ import annotations

import random
import statistics

import pytest

from guardrail.errors import ProvenanceError
from guardrail.provenance.sketch import BINS, Sketcher, jaccard, matches

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
        Sketcher.from_params(b"\x09" + bytes(15))
