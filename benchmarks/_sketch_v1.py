"""The version-1 provenance sketch (pure Python: ``zlib.crc32`` per word, big-int lanes, one
``sorted``), kept as the baseline ``sketch_stages.py`` times the current sketch against in the
same run: timings on this shared machine move by ±30 % between runs, ratios much less."""

from __future__ import annotations

import hashlib
import zlib
from array import array

from guardrail.provenance.normalize import words

BINS, MIN_WORDS, MAX_WORDS = 48, 8, 2048
_LOW24 = int.from_bytes(b"\xff\xff\xff\x00\x00\x00\x00\x00" * MAX_WORDS, "little")


class SketcherV1:
    def __init__(self, key: bytes = b"", shingle: int = 3) -> None:
        digest = hashlib.blake2b(key, digest_size=15, person=b"guardrail-prov").digest()
        spread = hashlib.blake2b(bytes([shingle]) + digest, digest_size=16).digest()
        self.shingle = shingle
        self._mults = [
            int.from_bytes(spread[4 * i : 4 * i + 4], "little") | 0x80000001 for i in range(shingle)
        ]

    def sketch(self, text: str) -> bytes | None:
        tokens = words(text)
        if len(tokens) < MIN_WORDS:
            return None
        del tokens[MAX_WORDS:]
        count = len(tokens)
        x = int.from_bytes(array("Q", list(map(zlib.crc32, tokens))), "little")
        mixed = x * self._mults[0]
        for i, mult in enumerate(self._mults[1:], 1):
            mixed ^= (x >> (64 * i)) * mult
        lanes = ((mixed >> 40) & _LOW24) * BINS
        shingles = array("Q", lanes.to_bytes(8 * count, "little"))
        del shingles[count - self.shingle + 1 :]
        ordered = array("I", sorted(shingles)).tobytes()
        bins, values = ordered[3::4], ordered[1::4]
        first = list(map(bins.find, range(BINS)))
        if -1 in first:
            out = bytearray(map(values.__getitem__, first))
            for empty in (b for b in range(BINS) if first[b] < 0):
                distance = 1
                while (at := first[(empty + distance) % BINS]) < 0:
                    distance += 1
                out[empty] = (values[at] + 67 * distance) & 0xFF
            return bytes(out)
        return bytes(map(values.__getitem__, first))
