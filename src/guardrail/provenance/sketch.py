"""A served text's fingerprint: 48 bytes of one-permutation b-bit MinHash over word shingles.

Every run of ``shingle`` consecutive words (3 by default) is hashed; the hashes are split
into 48 bins by value, and a bin keeps one byte of its smallest hash. Two texts agree on a
bin with probability J + (1 - J)/256, J being the Jaccard similarity of their shingle sets,
so the share of equal bytes estimates J. One permutation split into bins (Li, Owen & Zhang
2012) costs one hash per shingle where 48 independent MinHashes would cost 48; a bin no
shingle fell into borrows its right neighbour's value (rotation densification, Shrivastava &
Li 2014), so short texts still compare bin for bin.

Speed without numpy: every Python-level operation per word costs ~50 ns, so there are as few
as possible. A word is hashed once, with ``zlib.crc32`` (C speed); the words' hashes are laid
out as 64-bit lanes of one big integer, and every shingle's hash is computed at once, lane by
lane: ``x*A ^ (x>>64)*B ^ (x>>128)*C`` multiplies 32-bit values by 32-bit constants, so no
lane carries into the next. The top 24 bits of each lane, times 48, put the bin in the top
byte and leave byte 1 as the value kept. One ``sorted`` orders the shingles by bin and value,
so a bin's first shingle (``bytes.find``) is its smallest. The multipliers come from a key
(blake2b): sketches of two deployments do not compare, and nobody without the key can tell
which words of a text its sketch rests on. blake2b per shingle instead of crc32 and lanes
measured ~5x slower (0.6 µs a call), and SimHash would need a loop over 64 bits per shingle.
"""

from __future__ import annotations

import hashlib
import zlib
from array import array

from guardrail.errors import ProvenanceError
from guardrail.provenance.normalize import words

#: Bytes (bins) per sketch.
BINS = 48
#: Words a text needs to be sketched: a one-line reply is alike for everyone.
MIN_WORDS = 8
#: Words read from the start of a long text. A leak keeps the start of what it took (a
#: truncation keeps the head), and a 12 KB answer costs 70 µs already.
MAX_WORDS = 2048
#: Length of the parameters that ``Sketcher.params`` carries into an index file.
PARAMS_SIZE = 16
_LANE = 64
_LOW24 = int.from_bytes(b"\xff\xff\xff\x00\x00\x00\x00\x00" * MAX_WORDS, "little")
_RANGE = range(BINS)


class Sketcher:
    """Sketches texts with one key's hash functions and ``shingle`` words per shingle."""

    __slots__ = ("_mults", "params", "shingle")

    def __init__(self, key: bytes = b"", shingle: int = 3) -> None:
        digest = hashlib.blake2b(key, digest_size=PARAMS_SIZE - 1, person=b"guardrail-prov")
        self._setup(bytes([shingle]) + digest.digest())

    @classmethod
    def from_params(cls, params: bytes) -> Sketcher:
        """The sketcher an index file was written with (its ``params``)."""
        sketcher = cls.__new__(cls)
        sketcher._setup(params)
        return sketcher

    def _setup(self, params: bytes) -> None:
        if len(params) != PARAMS_SIZE or not 1 <= params[0] <= 4:
            raise ProvenanceError(f"sketch parameters not understood: {params.hex()}")
        self.params = bytes(params)
        self.shingle = params[0]
        # odd multipliers with the top bit set: every bit of a word's hash reaches the top
        # bits of its lane, and a product stays within 64 bits
        spread = hashlib.blake2b(params, digest_size=16).digest()
        self._mults = [
            int.from_bytes(spread[4 * i : 4 * i + 4], "little") | 0x80000001
            for i in range(self.shingle)
        ]

    def sketch(self, text: str) -> bytes | None:
        """``BINS`` bytes, or None when ``text`` has fewer than ``MIN_WORDS`` words."""
        return self.sketch_words(words(text))

    def sketch_words(self, tokens: list[bytes]) -> bytes | None:
        if len(tokens) < MIN_WORDS:
            return None
        del tokens[MAX_WORDS:]
        count = len(tokens)
        x = int.from_bytes(array("Q", list(map(zlib.crc32, tokens))), "little")
        mixed = x * self._mults[0]
        for i, mult in enumerate(self._mults[1:], 1):
            mixed ^= (x >> (_LANE * i)) * mult
        lanes = ((mixed >> 40) & _LOW24) * BINS
        shingles = array("Q", lanes.to_bytes(8 * count, "little"))
        del shingles[count - self.shingle + 1 :]  # the last lanes are partial shingles
        ordered = array("I", sorted(shingles)).tobytes()
        bins, values = ordered[3::4], ordered[1::4]
        first = list(map(bins.find, _RANGE))  # sorted: a bin's first shingle is its smallest
        if -1 in first:
            return _densified(first, values)
        return bytes(map(values.__getitem__, first))


def _densified(first: list[int], values: bytes) -> bytes:
    """Empty bins (``first`` -1) take the value of the next filled bin to the right, shifted
    by how far it is, so that two texts empty in the same bin agree when their neighbours do.

    Most 1 KB texts leave a bin or two empty (155 shingles in 48 bins), so this runs for most
    texts: only the empty bins are visited (a loop over all 48 cost 9-15 µs a text)."""
    out = bytearray(map(values.__getitem__, first))  # an empty bin's -1 picks a placeholder
    empty = first.index(-1)
    while True:
        distance = 1
        while (at := first[(empty + distance) % BINS]) < 0:
            distance += 1
        out[empty] = (values[at] + 67 * distance) & 0xFF
        try:
            empty = first.index(-1, empty + 1)
        except ValueError:
            return bytes(out)


def matches(a: bytes, b: bytes) -> int:
    """Bins on which two sketches agree."""
    return (int.from_bytes(a) ^ int.from_bytes(b)).to_bytes(BINS).count(0)


def jaccard(agreeing: int) -> float:
    """The Jaccard similarity estimated from ``agreeing`` equal bins (chance equality of a
    byte, 1/256, taken out)."""
    return max(0.0, (agreeing / BINS - 1 / 256) / (1 - 1 / 256))
