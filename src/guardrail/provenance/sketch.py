"""A served text's fingerprint: 48 bytes of one-permutation b-bit MinHash over word shingles.

Every run of ``shingle`` consecutive words (3 by default) is hashed; the hashes are split
into 48 bins by value, and a bin keeps one byte of its smallest hash. Two texts agree on a
bin with probability J + (1 - J)/256, J being the Jaccard similarity of their shingle sets,
so the share of equal bytes estimates J. One permutation split into bins (Li, Owen & Zhang
2012) costs one hash per shingle where 48 independent MinHashes would cost 48; a bin no
shingle fell into borrows the value of the next filled bin to its right (rotation
densification, Shrivastava & Li 2014), so short texts still compare bin for bin.

The hash functions, all keyed (sketches of two deployments do not compare, and nobody
without the key can tell which words a sketch rests on), all arithmetic modulo 2**64:

- a word's hash is the polynomial sum(byte_j * P**j) with a keyed odd P: a vectorised sketch
  gets every word's at once from one prefix sum over the text's bytes (``sketch_numpy``);
- a shingle's is Horner's ``((w0*M0 + w1)*M1 + w2)*M2`` over its words' hashes, M0... keyed
  and odd, then ``h ^= h >> 32; h *= MF``: without that last step the whole hash would be
  linear in the text's bytes (modulo 2**64), a family known to be far from min-wise
  independent. (Measured on 360k pairs of unrelated answers of shared templates, the share
  agreeing on 8 bins or more moved between 0.1 % and 0.5 % from one key to another, for
  version 1 and for this sketch, with or without the step: keys matter more than the step);
- the bin is ``(h >> 32) * 48 >> 32``, which grows with h: sorting the hashes sorts them by
  bin, then by value within a bin, and a bin's smallest hash is the first at or past its
  lower bound (one binary search for all 48). The byte kept is bits 24-31 of that hash (a
  product's top byte modulo 2**32, unrelated to which hash of the bin is smallest: the top
  bits decide that) plus 67 times the bin's number, so that two empty bins of one text that
  borrow the same neighbour do not agree with each other by construction.

Speed: numpy does it with ~20 calls on whole arrays (``sketch_numpy``), ~23 µs of CPU a KB
of text (normalisation included) where version 1 (pure Python: one ``zlib.crc32`` per word,
big-int lanes, one ``sorted``) takes ~52, measured in the same run
(``benchmarks/sketch_stages.py``). Most of it is the calls' fixed cost, ~1 µs each, not the
bytes: ``sketch_many`` shares the calls between texts, ~14 µs a KB in batches of 8 texts of
~1 KB, ~10 in batches of 64 (the recorder, ``trace find``). Without numpy,
``sketch_reference`` computes the same bytes one word and one shingle at a time, ~200 µs a KB
(~4x slower than version 1): the fallback, and the definition the vectorised code is tested
against.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING

from guardrail.errors import ProvenanceError
from guardrail.provenance.normalize import normalized

if TYPE_CHECKING:
    from guardrail.provenance.sketch_numpy import Tables

_vectorised: type[Tables] | None
try:
    import numpy  # noqa: F401  (only whether it is there)
except ModuleNotFoundError:  # the extra ``provenance`` brings it
    _vectorised = None
else:
    from guardrail.provenance.sketch_numpy import Tables as _vectorised

#: Bytes (bins) per sketch.
BINS = 48
#: Words a text needs to be sketched: a one-line reply is alike for everyone.
MIN_WORDS = 8
#: Words read from the start of a long text. A leak keeps the start of what it took (a
#: truncation keeps the head).
MAX_WORDS = 2048
#: Bytes of normalised text read at most (a word they cut is dropped): the vectorised
#: sketch's tables of powers cover this many, whatever a single word's length.
MAX_BYTES = 32768
#: Length of the parameters that ``Sketcher.params`` carries into an index file.
PARAMS_SIZE = 16
#: The sketch's definition, in the top half of the parameters' first byte (the shingle in the
#: bottom half). Version 1, ``zlib.crc32`` lanes (unnumbered: its first byte was the shingle
#: alone), made other values of the same texts: an index of it must not meet this one's.
VERSION = 2
MASK = (1 << 64) - 1
#: Each bin's lower bound among 64-bit hashes: the smallest h with ``bin(h) >= b``.
BOUNDS = tuple((-(-(b << 32) // BINS)) << 32 for b in range(BINS))
#: Added to a bin's byte (see the module's docstring).
OFFSETS = tuple(67 * b for b in range(BINS))


class Sketcher:
    """Sketches texts with one key's hash functions and ``shingle`` words per shingle."""

    __slots__ = ("_tables", "base", "mixers", "params", "shingle", "spread")

    def __init__(self, key: bytes = b"", shingle: int = 3) -> None:
        if not 1 <= shingle <= 4:
            raise ProvenanceError(f"a shingle is 1 to 4 words, not {shingle}")
        digest = hashlib.blake2b(key, digest_size=PARAMS_SIZE - 1, person=b"guardrail-prov")
        self._setup(bytes([VERSION << 4 | shingle]) + digest.digest())

    @classmethod
    def from_params(cls, params: bytes) -> Sketcher:
        """The sketcher an index file was written with (its ``params``)."""
        sketcher = cls.__new__(cls)
        sketcher._setup(params)
        return sketcher

    def _setup(self, params: bytes) -> None:
        if len(params) != PARAMS_SIZE:
            raise ProvenanceError(f"sketch parameters not understood: {params.hex()}")
        version, shingle = params[0] >> 4, params[0] & 0xF
        if version != VERSION:
            raise ProvenanceError(
                f"sketches made by sketch version {version or 1}, this guardrail makes version "
                f"{VERSION}: they do not compare; start a new index (move the old file away)"
            )
        if not 1 <= shingle <= 4:
            raise ProvenanceError(f"sketch parameters not understood: {params.hex()}")
        self.params = bytes(params)
        self.shingle = shingle
        spread = hashlib.blake2b(params, digest_size=8 * (shingle + 2)).digest()
        odd = [int.from_bytes(spread[i : i + 8], "little") | 1 for i in range(0, len(spread), 8)]
        #: P of the words' polynomial; M0, M1, ... of the shingles' (one per word); MF
        self.base, self.mixers, self.spread = odd[0], tuple(odd[1:-1]), odd[-1]
        self._tables = _vectorised(self) if _vectorised is not None else None

    @property
    def vectorised(self) -> bool:
        """Whether numpy sketches (else ``sketch_reference`` does, slowly)."""
        return self._tables is not None

    def sketch(self, text: str) -> bytes | None:
        """``BINS`` bytes, or None when ``text`` has fewer than ``MIN_WORDS`` words."""
        if self._tables is None:
            return self.sketch_reference(text)
        return self._tables.sketch(_head(normalized(text)))

    def sketch_many(self, texts: Sequence[str]) -> list[bytes | None]:
        """``sketch`` of each of ``texts``: ~2x faster a KB than one at a time with numpy, from
        ~8 texts of ~1 KB; for outputs that come in bulk."""
        if self._tables is None:
            return [self.sketch_reference(text) for text in texts]
        return self._tables.sketch_many([_head(normalized(text)) for text in texts])

    def sketch_reference(self, text: str) -> bytes | None:
        """``sketch`` one word and one shingle at a time, in Python."""
        tokens = _head(normalized(text)).split()[:MAX_WORDS]
        if len(tokens) < MIN_WORDS:
            return None
        base, mixers, spread = self.base, self.mixers, self.spread
        polys = []
        for token in tokens:
            poly = 0
            for byte in reversed(token):  # Horner: sum(byte_j * P**j)
                poly = (poly * base + byte) & MASK
            polys.append(poly)
        hashes = []
        for i in range(len(polys) - self.shingle + 1):
            h = polys[i] * mixers[0]
            for j in range(1, self.shingle):
                h = (h + polys[i + j]) * mixers[j]
            h &= MASK
            hashes.append(((h ^ h >> 32) * spread) & MASK)
        hashes.sort()
        count = len(hashes)
        return bytes(
            ((hashes[bisect_left(hashes, bound) % count] >> 24) + offset) & 0xFF
            for bound, offset in zip(BOUNDS, OFFSETS, strict=True)
        )


def _head(text: bytes) -> bytes:
    """The first ``MAX_BYTES`` bytes of a normalised text, less a word they cut."""
    if len(text) <= MAX_BYTES:
        return text
    return text[: max(0, text.rfind(b" ", 0, MAX_BYTES + 1))]


def matches(a: bytes, b: bytes) -> int:
    """Bins on which two sketches agree."""
    return (int.from_bytes(a) ^ int.from_bytes(b)).to_bytes(BINS).count(0)


def jaccard(agreeing: int) -> float:
    """The Jaccard similarity estimated from ``agreeing`` equal bins (chance equality of a
    byte, 1/256, taken out)."""
    return max(0.0, (agreeing / BINS - 1 / 256) / (1 - 1 / 256))
