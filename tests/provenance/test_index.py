"""The index: bounded, expiring, saved and loaded whole, a damaged file refused."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from guardrail.errors import ProvenanceError
from guardrail.provenance.index import ENTRY_BYTES, ProvenanceIndex
from guardrail.provenance.sketch import BINS


def _sketch(n: int) -> bytes:
    return bytes((n * 7 + j) & 0xFF for j in range(BINS))


def _filled(count: int, capacity: int = 100, retention: float = 1e6) -> ProvenanceIndex:
    index = ProvenanceIndex(capacity=capacity, retention=retention)
    for n in range(count):
        index.add_sketch(f"subject-{n % 3}", _sketch(n), 1000.0 + n)
    return index


def _entries(index: ProvenanceIndex) -> list[tuple[str, float, bytes]]:
    return sorted(index.entry(slot) for slot in range(index.slots) if index.live(slot))


def test_an_entry_costs_56_bytes():
    index = _filled(3000, capacity=3000)
    assert ENTRY_BYTES == 56
    assert index.nbytes == 56 * index.slots
    assert index.slots == 3000  # grown by doubling, but never past the capacity


def test_the_oldest_entries_make_room_at_capacity():
    index = _filled(250, capacity=100)
    assert len(index) == 100 and index.slots == 100
    times = sorted(ts for _, ts, _ in _entries(index))
    assert times == [1000.0 + n for n in range(150, 250)]


def test_expire_drops_what_is_older_than_the_retention():
    index = _filled(50, retention=10)
    assert index.expire(now=1000.0 + 49) == 39
    assert sorted(ts for _, ts, _ in _entries(index)) == [1000.0 + n for n in range(39, 50)]
    index.add_sketch("late", _sketch(99), 1100.0)  # the freed slots are reused
    assert len(index) == 12


def test_names_of_subjects_with_no_entry_left_are_forgotten(tmp_path: Path):
    """The subject table would otherwise grow with every subject ever served, and each save
    write it whole: a year of one-time visitors in a file of a month's entries."""
    index = ProvenanceIndex(capacity=100, retention=10)
    for n in range(300):  # 300 subjects, one entry each: the ring keeps the last 100
        index.add_sketch(f"once-{n}", _sketch(n), 1000.0 + n / 10)
    assert index.expire(now=1034.0) == 40  # ... and retention takes the 40 oldest of those
    index.add_sketch("once-7", _sketch(7), 1034.0)  # a subject seen again, after its entry went
    before = _entries(index)
    assert index.compact_names() == 300 - 61
    assert sorted(index.names) == sorted({name for name, _, _ in before})
    assert _entries(index) == before
    assert index.compact_names() == 0  # nothing more to forget
    index.add_sketch("new", _sketch(1), 1013.0)  # numbering goes on after the kept names
    index.save(tmp_path / "i.grprov")
    loaded = ProvenanceIndex.load(tmp_path / "i.grprov")
    assert loaded.subjects_entries() == index.subjects_entries() and len(loaded.names) == 62


def test_texts_too_short_are_not_added():
    index = ProvenanceIndex()
    assert index.add("s", "ok thanks", 1.0) is False
    assert index.add("s", "one two three four five six seven eight nine ten", 1.0) is True
    assert len(index) == 1


def test_save_and_load_round_trip(tmp_path: Path):
    index = _filled(250, capacity=100)  # wrapped: the ring's start is not slot 0
    index.save(tmp_path / "index.grprov")
    loaded = ProvenanceIndex.load(tmp_path / "index.grprov")
    assert _entries(loaded) == _entries(index)
    assert loaded.capacity == 100 and loaded.retention == index.retention
    assert loaded.sketcher.params == index.sketcher.params
    assert loaded.subjects_entries() == index.subjects_entries()


def test_an_empty_index_round_trips(tmp_path: Path):
    ProvenanceIndex().save(tmp_path / "empty")
    assert len(ProvenanceIndex.load(tmp_path / "empty")) == 0


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "checksum"),
        (lambda data: data[:200] + bytes([data[200] ^ 0x40]) + data[201:], "checksum"),
        (lambda data: data[:-10], "truncated"),
        (lambda data: b"NOTANIDX" + data[8:], "bad magic"),
        (lambda data: data[:8] + b"\x09\x00" + data[10:], "version 9"),
        (lambda data: b"", "bad magic"),
    ],
)
def test_a_damaged_file_is_refused_with_its_name(tmp_path: Path, damage, message: str):
    path = tmp_path / "index.grprov"
    _filled(20).save(path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ProvenanceError, match=message) as caught:
        ProvenanceIndex.load(path)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_refused(tmp_path: Path):
    with pytest.raises(ProvenanceError, match="cannot read"):
        ProvenanceIndex.load(tmp_path / "nope")


def test_a_sketch_of_the_wrong_size_is_refused():
    with pytest.raises(ProvenanceError):
        ProvenanceIndex().add_sketch("s", b"short", 1.0)


def _rewritten(data: bytes, at: int, new: bytes) -> bytes:
    """``data`` with ``new`` at ``at`` and a checksum that matches again."""
    body = data[:at] + new + data[at + len(new) : -4]
    return body + zlib.crc32(body).to_bytes(4, "little")


def test_an_index_of_the_earlier_sketch_is_refused_not_compared(tmp_path: Path):
    """Version 1 files hold sketches of the crc32 sketch, which agree with this one's by
    chance only: searching them would name nobody, silently."""
    path = tmp_path / "index.grprov"
    _filled(20).save(path)
    data = path.read_bytes()
    path.write_bytes(_rewritten(data, 8, b"\x01\x00"))  # as version 1 wrote it
    with pytest.raises(ProvenanceError, match="version 1: its sketches were made by an earlier"):
        ProvenanceIndex.load(path)
    params_at = 8 + 2 + 2 + 4 + 4 + 8
    path.write_bytes(_rewritten(data, params_at, b"\x03"))  # version 1's parameters
    with pytest.raises(ProvenanceError, match="sketch version 1, this guardrail makes version 2"):
        ProvenanceIndex.load(path)
