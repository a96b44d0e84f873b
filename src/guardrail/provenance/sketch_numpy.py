"""``Sketcher.sketch`` on whole arrays: the same bytes as ``sketch_reference``, ~7x faster.

Every Python-level operation costs ~50 ns a word and a 1 KB text is ~170 words, so nothing
here goes word by word: each step is one numpy call over all the bytes or all the words,
~20 calls a text. Words are found where the text (padded with a space at each end) turns
from space to non-space and back; their polynomial hashes come from one prefix sum of
``byte_i * P**i`` (uint64 wraps around: arithmetic modulo 2**64, as defined), a word's being
the difference of two prefix sums times ``P**-start`` (P is odd, so invertible modulo 2**64).

Those ~20 calls cost ~1 µs each whatever the size, as much as the work on a KB: ``sketch_many``
shares them between texts. The texts are joined by spaces (a word's hash does not depend on
where it stands, and no word crosses a space) and hashed as one; a shingle whose words are
not all one text's is set aside, and each (text, bin)'s smallest hash comes from one
``np.minimum.at`` over all the shingles: no sort (one sort of the whole batch's hashes costs
more per hash than a text's own, and per text it is back to a call each).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from guardrail.provenance import sketch as sk

if TYPE_CHECKING:
    from guardrail.provenance.sketch import Sketcher

_U64 = np.uint64
_SPACE = np.uint8(32)
_SHIFT = np.uint64(32)
_LOW = np.uint64(24)
#: Above any hash's bits 24-63: a bin no shingle fell into.
_EMPTY = np.uint64(1 << 63)
#: Bytes of text hashed together at most (the tables of powers cover them, and MAX_BYTES).
#: Past ~36 KB, the arrays of a batch (8 bytes a byte of text: 256 KB here) are each given
#: fresh pages by malloc (mmap, trimmed back on free): 30 page faults a KB, and a KB costs
#: twice as much (measured: 9.8 µs a KB in batches of 64 texts at 32 KB, 15.9 at 40 KB).
BATCH_BYTES = 32 * 1024
#: Where bits 24-31 of a uint64 are among its bytes
_BYTE = 3 if sys.byteorder == "little" else 4


def _powers(base: int, count: int) -> np.ndarray[tuple[int], np.dtype[np.uint64]]:
    """base**0, base**1, ... modulo 2**64."""
    powers = np.full(count, base, dtype=_U64)
    powers[0] = 1
    return np.cumprod(powers, dtype=_U64)


class Tables:
    """One sketcher's constants as numpy values, and its powers of P (2 x 256 KB)."""

    __slots__ = (
        "bounds",
        "key_offsets",
        "mixers",
        "offsets",
        "powers",
        "shifted_inverses",
        "shingle",
        "spread",
    )

    def __init__(self, sketcher: Sketcher) -> None:
        size = max(sk.MAX_BYTES, BATCH_BYTES) + 2  # the texts and the spaces around them
        self.powers = _powers(sketcher.base, size)
        # P**-(k+1) at k: a word found after the space at k starts at k+1; times the last
        # mixer, which Horner's (((w0*M0 + w1)*M1 + w2)*M2 = ((W0*M0 + W1)*M1 + W2 with
        # W = w*M2) then needs no multiplication of its own
        mixers = sketcher.mixers
        inverses = _powers(pow(sketcher.base, -1, 1 << 64), size + 1)[1:]
        self.shifted_inverses = inverses * _U64(mixers[-1])
        self.shingle = sketcher.shingle
        self.mixers = [_U64(m) for m in mixers]
        self.spread = _U64(sketcher.spread)
        self.bounds = np.array(sk.BOUNDS, dtype=_U64)
        self.key_offsets = np.array(sk.OFFSETS, dtype=_U64)  # on bits 24-63 of the hashes
        self.offsets = self.key_offsets << _LOW

    def sketch(self, text: bytes) -> bytes | None:
        """The sketch of normalised ``text`` (no more than ``MAX_BYTES``)."""
        # methods and ufuncs, not np.diff, np.flatnonzero, np.cumsum, np.searchsorted: their
        # Python wrappers cost 1-3 µs a call, as much as the work on a KB
        padded = np.frombuffer(b" " + text + b" ", dtype=np.uint8)
        in_word = padded != _SPACE
        # where the text turns at index k: after it a word starts, or at it one ends
        edges = np.not_equal(in_word[1:], in_word[:-1]).nonzero()[0][: 2 * sk.MAX_WORDS]
        count = len(edges) >> 1
        if count < sk.MIN_WORDS:
            return None
        prefix = np.multiply(padded, self.powers[: len(padded)])
        np.add.accumulate(prefix, out=prefix)
        at_edges = prefix.take(edges)
        words = at_edges[1::2] - at_edges[0::2]
        words *= self.shifted_inverses.take(edges[0::2])
        hashes = self._shingles(words, count - self.shingle + 1)
        hashes.sort()
        kept = hashes.take(hashes.searchsorted(self.bounds), mode="wrap")
        kept += self.offsets
        sketch: bytes = kept.view(np.uint8)[_BYTE::8].tobytes()
        return sketch

    def sketch_many(self, texts: Sequence[bytes]) -> list[bytes | None]:
        """``sketch`` of each of ``texts``, a few dozen at a time in shared numpy calls."""
        out: list[bytes | None] = []
        start, total = 0, len(texts)
        while start < total:
            end, size = start + 1, len(texts[start]) + 2  # padded: a space at each end
            while end < total and size + len(texts[end]) + 1 <= BATCH_BYTES + 2:
                size += len(texts[end]) + 1
                end += 1
            if end == start + 1:  # shared calls cost more than they save on one text
                out.append(self.sketch(texts[start]))
            else:
                out += self._joined(texts[start:end])
            start = end
        return out

    def _joined(self, texts: Sequence[bytes]) -> list[bytes | None]:
        """The texts' sketches from their concatenation: one numpy call a step for all."""
        n = len(texts)
        # the space before each text in the padded join (and the last space): 0, len0 + 1, ...;
        # a text's words start at edges at or past it
        before = [0]
        for text in texts:
            before.append(before[-1] + len(text) + 1)
        padded = np.frombuffer(b" " + b" ".join(texts) + b" ", dtype=np.uint8)
        in_word = padded != _SPACE
        edges = np.not_equal(in_word[1:], in_word[:-1]).nonzero()[0]
        starts, ends = edges[0::2], edges[1::2]
        first = starts.searchsorted(before)  # each text's first word, and the words' end
        counts = first[1:] - first[:-1]
        if max(map(len, texts)) >= 2 * sk.MAX_WORDS and counts.max() > sk.MAX_WORDS:
            # more than MAX_WORDS words take 2 * MAX_WORDS bytes at least: rarely checked
            rank = np.arange(len(starts)) - first[:-1].repeat(counts)
            starts, ends = starts[rank < sk.MAX_WORDS], ends[rank < sk.MAX_WORDS]
            np.minimum(counts, sk.MAX_WORDS, out=counts)
        # a word's hash does not depend on where it stands: the concatenation's prefix sums
        # give every text's words as the text's own would
        prefix = np.multiply(padded, self.powers[: len(padded)])
        np.add.accumulate(prefix, out=prefix)
        words = prefix.take(ends)
        words -= prefix.take(starts)
        words *= self.shifted_inverses.take(starts)
        shingles = len(words) - self.shingle + 1
        # each (text, bin)'s smallest hash, as bits 24-63 (ties there keep the same byte);
        # the last slot takes the shingles that straddle two texts
        minima = np.empty(n * sk.BINS + 1, dtype=_U64)
        minima.fill(_EMPTY)  # (np.full: the same in Python, ~1 µs more)
        if shingles > 0:
            hashes = self._shingles(words, shingles)
            row = np.arange(0, n * sk.BINS, sk.BINS, dtype=np.int64).repeat(counts)
            group = hashes >> _SHIFT  # bin(h) = (h >> 32) * 48 >> 32, as BOUNDS has it
            group *= _U64(sk.BINS)
            group >>= _SHIFT
            cell = group.view(np.int64)  # < 48: the same values
            cell += row[:shingles]
            np.copyto(cell, n * sk.BINS, where=row[:shingles] != row[self.shingle - 1 :])
            hashes >>= _LOW
            np.minimum.at(minima, cell, hashes)
        # a bin's byte is the smallest hash at or past its bound: its own smallest, or the
        # next filled bin's (minima of later bins are larger), or wrapping, the text's first
        kept = np.minimum.accumulate(minima[:-1].reshape(n, sk.BINS)[:, ::-1], axis=1)[:, ::-1]
        kept = np.where(kept == _EMPTY, kept[:, :1], kept)
        kept += self.key_offsets
        sketches = kept.astype(np.uint8).tobytes()
        return [
            sketches[i * sk.BINS : (i + 1) * sk.BINS] if count >= sk.MIN_WORDS else None
            for i, count in enumerate(counts.tolist())
        ]

    def _shingles(
        self, words: np.ndarray[tuple[int], np.dtype[np.uint64]], count: int
    ) -> np.ndarray[tuple[int], np.dtype[np.uint64]]:
        """The mixed hashes of the ``count`` shingles that start at the first ``words`` (spent:
        with one-word shingles, the hashes are computed in their place)."""
        hashes = words[:count]  # a view: the first product below makes a new array
        for j in range(1, self.shingle):  # Horner, the words already times the last mixer
            if j == 1:
                hashes = hashes * self.mixers[0]
            else:
                hashes *= self.mixers[j - 1]
            hashes += words[j : j + count]
        hashes ^= hashes >> _SHIFT
        hashes *= self.spread
        return hashes
