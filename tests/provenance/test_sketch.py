"""The sketch: 48 bytes whose agreement estimates the Jaccard similarity of word trigrams."""

from __future__ import annotations

import hashlib
import random
import statistics
import zlib

import pytest

from guardrail.errors import ProvenanceError
from guardrail.provenance.normalize import words
from guardrail.provenance.sketch import BINS, MAX_WORDS, MIN_WORDS, Sketcher, jaccard, matches
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
        Sketcher.from_params(b"\x09" + bytes(15))


def _reference(sketcher: Sketcher, text: str) -> tuple[bytes | None, int]:
    """The sketch as defined, one shingle at a time, and how many bins were empty: what the
    fast path must equal, so that a saved index stays comparable with what a faster
    sketcher makes."""
    hashes = [zlib.crc32(word) for word in words(text)[:MAX_WORDS]]
    if len(hashes) < MIN_WORDS:
        return None, BINS
    spread = hashlib.blake2b(sketcher.params, digest_size=16).digest()
    mults = [int.from_bytes(spread[4 * j : 4 * j + 4], "little") | 0x80000001 for j in range(4)]
    smallest: dict[int, int] = {}
    for i in range(len(hashes) - sketcher.shingle + 1):
        mixed = 0
        for j in range(sketcher.shingle):
            mixed ^= hashes[i + j] * mults[j]
        key = ((mixed >> 40) & 0xFFFFFF) * BINS  # the bin in bits 24-29, the value in 8-15
        smallest[key >> 24] = min(key, smallest.get(key >> 24, key))
    out = []
    for b in range(BINS):
        distance = next(d for d in range(BINS) if (b + d) % BINS in smallest)
        out.append(((smallest[(b + distance) % BINS] >> 8) + 67 * distance) & 0xFF)
    return bytes(out), BINS - len(smallest)


@pytest.mark.parametrize("shingle", [1, 2, 3, 4])
def test_the_fast_sketch_is_the_defined_one(shingle: int):
    rng = random.Random(shingle)
    texts = list(leaks.never_served(shingle, 60))  # ~1 KB answers: most leave a bin empty
    texts += [" ".join(rng.choices(VOCAB[:9], k=rng.randint(8, 40))) for _ in range(60)]
    texts += [" ".join(rng.choices(VOCAB, k=n)) for n in (7, 8, 9, MAX_WORDS + 50)]
    sketcher = Sketcher(b"reference", shingle)
    densified = 0
    for text in texts:
        expected, empty = _reference(sketcher, text)
        assert sketcher.sketch(text) == expected
        densified += expected is not None and empty > 0
    assert densified > len(texts) // 3
