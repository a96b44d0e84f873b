"""The bit-sliced scan finds exactly the pairs a pair-by-pair comparison finds."""

from __future__ import annotations

import random

import pytest

from guardrail.provenance.scan import common_values, scan
from guardrail.provenance.sketch import BINS, matches


def _rows(rng: random.Random, count: int) -> list[bytes]:
    return [bytes(rng.getrandbits(8) for _ in range(BINS)) for _ in range(count)]


def _columns(rows: list[bytes]) -> list[bytes]:
    return [bytes(row[j] for row in rows) for j in range(BINS)]


def _near(rng: random.Random, row: bytes, changed: float) -> bytes:
    return bytes(rng.getrandbits(8) if rng.random() < changed else v for v in row)


@pytest.mark.parametrize("threshold", [1, 3, 8, 20, 48])
def test_scan_agrees_with_brute_force(threshold: int):
    rng = random.Random(threshold)
    rows = _rows(rng, 700)
    suspects = [_near(rng, rng.choice(rows), rng.random()) for _ in range(19)]  # 3 groups
    found = set(scan(_columns(rows), suspects, threshold))
    expected = {
        (s, i)
        for s, suspect in enumerate(suspects)
        for i, row in enumerate(rows)
        if matches(suspect, row) >= threshold
    }
    assert found == expected


def test_common_values_do_not_count():
    rng = random.Random(1)
    rows = [bytes([7]) + row[1:] for row in _rows(rng, 20000)]  # bin 0 always holds 7
    common = common_values(_columns(rows))
    assert common[0] == frozenset({7}) and not any(common[1:])
    suspect = rows[5][:3] + bytes(v ^ 0xFF for v in rows[5][3:])  # agrees on bins 0-2
    assert (0, 5) in set(scan(_columns(rows), [suspect], 3))
    assert (0, 5) not in set(scan(_columns(rows), [suspect], 3, common))


def test_nothing_to_scan():
    assert list(scan([], [bytes(BINS)], 5)) == []
    assert list(scan(_columns(_rows(random.Random(2), 5)), [], 5)) == []
