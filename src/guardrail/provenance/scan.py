"""Which index entries agree with which suspect sketches on at least ``threshold`` bins.

A linear scan, vectorised without numpy: the work per entry happens inside C loops over
whole columns (one column = bin ``j``'s byte of every entry). Suspects go eight at a time,
one bit each: ``bytes.translate`` maps a column through a 256-byte table whose entry ``v``
has bit ``s`` set when suspect ``s`` has ``v`` in that bin, so one pass marks, for every
entry, which of the eight agree with it there. The marks are counted per entry and per
suspect by a bit-sliced adder on Python integers (plane ``p`` holds bit ``p`` of every
count; adding a mark is a ripple of AND/XOR over the planes), then compared with the
threshold the same way. Each step touches a million entries in well under a millisecond;
over 1M entries that is ~0.1 s per eight suspects, where a Python loop would take minutes.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence

from guardrail.provenance.sketch import BINS

#: A bin value is *common* when the entries hold it this many times more often than chance
#: (1 in 256): the smallest shingle of that bin is boilerplate (a template's scaffold, a
#: stock phrase), and agreeing on it says nothing about who was served the text.
COMMON = 2.0
#: ... and at least this many standard deviations above it, so that in a small index nothing
#: is common by chance (at 64k sampled entries 2x chance is 16 deviations out already).
DEVIATIONS = 6.0
#: Entries a column's values are counted on (every n-th entry beyond this many).
_SAMPLE = 65536
#: Entries below which no value is called common.
_COMMON_FLOOR = 256

GROUP = 8  # suspects per pass: the bits of a byte
_PLANES = BINS.bit_length()  # enough bits to count to BINS
_NONZERO = re.compile(rb"[^\x00]")


def common_values(columns: Sequence[bytes]) -> list[frozenset[int]]:
    """Per bin, the values held ``COMMON`` times more often than chance."""
    out: list[frozenset[int]] = []
    for column in columns:
        sample = column[:: max(1, len(column) // _SAMPLE)]
        if len(sample) < _COMMON_FLOOR:
            out.append(frozenset())
            continue
        chance = len(sample) / 256
        limit = max(COMMON * chance, chance + DEVIATIONS * math.sqrt(chance))
        out.append(frozenset(v for v, n in Counter(sample).items() if n > limit))
    return out


def scan(
    columns: Sequence[bytes],
    suspects: Sequence[bytes],
    threshold: int,
    common: Sequence[frozenset[int]] | None = None,
) -> Iterator[tuple[int, int]]:
    """``(suspect number, slot)`` for every pair agreeing on ``threshold`` bins or more,
    not counting the bins where the suspect holds a ``common`` value."""
    if not columns or not columns[0] or not 0 < threshold <= BINS:
        return
    size = len(columns[0])
    ones = (1 << (8 * size)) - 1
    for base in range(0, len(suspects), GROUP):
        group = suspects[base : base + GROUP]
        planes = [0] * _PLANES
        for j, column in enumerate(columns):
            table = bytearray(256)
            ignored = common[j] if common is not None else frozenset()
            for bit, sketch in enumerate(group):
                if sketch[j] not in ignored:
                    table[sketch[j]] |= 1 << bit
            carry = int.from_bytes(column.translate(table), "little")
            for p in range(_PLANES):
                plane = planes[p]
                planes[p] = plane ^ carry
                carry &= plane
                if not carry:
                    break
        hits = _at_least(planes, threshold, ones).to_bytes(size, "little")
        for found in _NONZERO.finditer(hits):
            slot = found.start()
            marks = hits[slot]
            for bit in range(len(group)):
                if marks >> bit & 1:
                    yield base + bit, slot


def _at_least(planes: list[int], threshold: int, ones: int) -> int:
    """Bit-sliced ``count >= threshold``: most significant plane first, as a comparator."""
    greater, equal = 0, ones
    for p in reversed(range(len(planes))):
        if threshold >> p & 1:
            equal &= planes[p]
        else:
            greater |= equal & planes[p]
            equal &= planes[p] ^ ones
    return greater | equal
