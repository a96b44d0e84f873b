"""A bounded, expiring index of served-output sketches by subject and time.

One entry is 56 bytes and nothing else: the sketch (48), the subject's interned number (4)
and the time in whole seconds (4), in three packed buffers. There is no search structure to
pay for per entry: ``trace find`` scans the sketches bin by bin (``scan``), which the
row-major buffer hands over as 48 columns with one extended slice each. Subject names are
interned once per subject (a dict entry and a string: per subject, not per response).

Bounds: at most ``capacity`` entries (the oldest overwritten first: the buffers are a ring,
grown by doubling up to ``capacity`` so a small deployment does not hold 56 MB it never
uses), and none older than ``retention`` seconds once ``expire`` has run. Entries are kept in
the order they were added; times come from the caller's clock and are trusted to grow.

File format (little-endian), written by ``save`` and read by ``load``::

    header   "GRPROV\\r\\n", version u16, bins u16, count u32, capacity u32,
             retention f64, sketch parameters (16 bytes), subject-table length u32
    subjects JSON list of names; entry subject numbers index it
    entries  count x u32 subject, count x u32 time, count x bins sketch bytes (oldest first)
    trailer  CRC-32 of everything above

With a Redis storage the entries live in Redis instead, shared by every worker
(``index_redis.py``); ``trace find`` reads them back into this class (``from_entries``).
"""

from __future__ import annotations

import json
import struct
import zlib
from array import array
from pathlib import Path

from guardrail.errors import ProvenanceError
from guardrail.provenance.sketch import BINS, PARAMS_SIZE, Sketcher

MAGIC = b"GRPROV\r\n"
#: 2: sketches of ``sketch.VERSION`` 2 (version 1 files hold the crc32 sketch's, which do not
#: compare with them: refused, by this and by their sketch parameters)
VERSION = 2
_HEADER = struct.Struct(f"<8sHHIId{PARAMS_SIZE}sI")
_CRC = struct.Struct("<I")
#: Bytes an entry costs in the index: sketch, subject number, time.
ENTRY_BYTES = BINS + 4 + 4
_FIRST_SLOTS = 1024


class ProvenanceIndex:
    """Sketches of served outputs, by subject and time, in bounded memory."""

    def __init__(
        self,
        capacity: int = 1_000_000,
        retention: float = 30 * 86400.0,
        sketcher: Sketcher | None = None,
    ) -> None:
        if capacity < 1 or retention <= 0:
            raise ProvenanceError("an index needs a capacity >= 1 and a retention > 0")
        self.capacity = capacity
        self.retention = retention
        self.sketcher = sketcher if sketcher is not None else Sketcher()
        self._ids: dict[str, int] = {}
        self.names: list[str] = []
        # physical slots; the live entries are slots start, start+1, ... (mod slots), count
        self._sketches = bytearray()
        self._subjects = array("I")
        self._times = array("I")
        self._start = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def slots(self) -> int:
        return len(self._subjects)

    @property
    def nbytes(self) -> int:
        """Bytes held by the entries' buffers (subject names not counted)."""
        return len(self._sketches) + self._subjects.itemsize * (2 * len(self._subjects))

    def add(self, subject: str, text: str, ts: float) -> bool:
        """Sketch ``text`` served to ``subject`` at ``ts`` and keep it; False when the text is
        too short to sketch. Costs ~23 µs a KB with numpy (``Sketcher.sketch_many``: ~14 in
        batches of 8): call it off the request path."""
        sketch = self.sketcher.sketch(text)
        return sketch is not None and self.add_sketch(subject, sketch, ts)

    def add_sketch(self, subject: str, sketch: bytes, ts: float) -> bool:
        """Keep ``sketch``; True (kept), as ``RedisIndexWriter.add_sketch`` says."""
        if len(sketch) != BINS:
            raise ProvenanceError(f"a sketch is {BINS} bytes, not {len(sketch)}")
        number = self._number(subject)
        slots = self.slots
        if self._count == slots:
            if slots < self.capacity:
                self._grow(min(self.capacity, max(_FIRST_SLOTS, 2 * slots)))
                slots = self.slots
            else:  # full: the oldest entry makes room
                self._start = (self._start + 1) % slots
                self._count -= 1
        slot = (self._start + self._count) % slots
        self._sketches[slot * BINS : slot * BINS + BINS] = sketch
        self._subjects[slot] = number
        self._times[slot] = int(ts) & 0xFFFFFFFF
        self._count += 1
        return True

    def _grow(self, slots: int) -> None:
        sketches, subjects, times = self._ordered()
        extra = slots - self._count
        self._sketches = sketches + bytes(extra * BINS)
        self._subjects = subjects + array("I", bytes(4 * extra))
        self._times = times + array("I", bytes(4 * extra))
        self._start = 0

    def _ordered(self) -> tuple[bytearray, array[int], array[int]]:
        """The live entries' buffers, oldest first."""
        start, end = self._start, self._start + self._count
        slots = self.slots
        if end <= slots:
            return (
                self._sketches[start * BINS : end * BINS],
                self._subjects[start:end],
                self._times[start:end],
            )
        wrap = end - slots
        return (
            self._sketches[start * BINS :] + self._sketches[: wrap * BINS],
            self._subjects[start:] + self._subjects[:wrap],
            self._times[start:] + self._times[:wrap],
        )

    def expire(self, now: float) -> int:
        """Drop the entries older than ``retention`` seconds; how many were dropped."""
        cutoff = int(now - self.retention)
        dropped = 0
        times, slots = self._times, self.slots
        while self._count and times[self._start] < cutoff:
            self._start = (self._start + 1) % slots
            self._count -= 1
            dropped += 1
        return dropped

    def compact_names(self) -> int:
        """Forget the names no live entry refers to any more (their entries expired or were
        overwritten), renumbering the rest; how many were forgotten. Without it the subject
        table grows with every subject ever served, and every save writes it whole. Costs a
        pass over the entries (~0.1 s for 1M): the recorder runs it in its save's thread."""
        start, end, slots = self._start, self._start + self._count, self.slots
        live = set(self._subjects[start:end] if end <= slots else self._subjects[start:])
        if end > slots:
            live.update(self._subjects[: end - slots])
        used = sorted(live)
        forgotten = len(self.names) - len(used)
        if not forgotten:
            return 0
        table = [0] * len(self.names)  # dead slots map to 0: never read
        for new, old in enumerate(used):
            table[old] = new
        self._subjects = array("I", map(table.__getitem__, self._subjects))
        self.names = [self.names[old] for old in used]
        self._ids = {name: number for number, name in enumerate(self.names)}
        return forgotten

    def bound(self, capacity: int, retention: float) -> None:
        """Take other bounds (a policy changed since the index was saved): the newest entries
        that fit are kept."""
        if capacity < 1 or retention <= 0:
            raise ProvenanceError("an index needs a capacity >= 1 and a retention > 0")
        sketches, subjects, times = self._ordered()
        drop = max(0, self._count - capacity)
        self._sketches = sketches[drop * BINS :]
        self._subjects, self._times = subjects[drop:], times[drop:]
        self._start, self._count = 0, self._count - drop
        self.capacity, self.retention = capacity, retention

    @classmethod
    def merged(cls, indexes: list[ProvenanceIndex]) -> ProvenanceIndex:
        """One index holding the entries of ``indexes`` (each worker's file), to search them
        at once; they must have been sketched alike (one key)."""
        if not indexes:
            raise ProvenanceError("no index to merge")
        first = indexes[0]
        if len(indexes) == 1:
            return first
        if any(index.sketcher.params != first.sketcher.params for index in indexes):
            raise ProvenanceError(
                "these indexes were sketched with different keys (provenance.key) or shingles: "
                "their sketches do not compare; search them one at a time"
            )
        total = sum(len(index) for index in indexes)
        out = cls(max(1, total), max(i.retention for i in indexes), first.sketcher)
        sketches, subjects, times = bytearray(), array("I"), array("I")
        for index in indexes:
            own_sketches, own_subjects, own_times = index._ordered()
            numbers = [out._number(name) for name in index.names]
            sketches += own_sketches
            subjects.extend(map(numbers.__getitem__, own_subjects))
            times += own_times
        out._sketches, out._subjects, out._times = sketches, subjects, times
        out._count = total
        return out

    @classmethod
    def from_entries(
        cls,
        names: list[str],
        subjects: array[int],
        times: array[int],
        sketches: bytes | bytearray,
        sketcher: Sketcher,
        retention: float,
    ) -> ProvenanceIndex:
        """An index over entries kept elsewhere (the Redis index, index_redis.py), oldest
        first: entry ``i`` is subject ``names[subjects[i]]``, served at ``times[i]``, sketch
        ``sketches[i * BINS : (i + 1) * BINS]``."""
        count = len(subjects)
        if len(times) != count or len(sketches) != count * BINS:
            raise ProvenanceError("entries of unequal lengths")
        if count and max(subjects) >= len(names):
            raise ProvenanceError("an entry names a subject the table lacks")
        index = cls(max(count, 1), retention, sketcher)
        index.names = list(names)
        index._ids = {name: number for number, name in enumerate(index.names)}
        index._subjects, index._times = subjects, times
        # taken as it is (not copied: 48 MB for 1M entries), the caller lets it go
        index._sketches = sketches if isinstance(sketches, bytearray) else bytearray(sketches)
        index._count = count
        return index

    def _number(self, subject: str) -> int:
        number = self._ids.get(subject)
        if number is None:
            number = self._ids[subject] = len(self.names)
            self.names.append(subject)
        return number

    # --- what ``scan`` and ``attribute`` read ---------------------------------------------

    def columns(self) -> list[bytes]:
        """Bin ``j``'s byte of every physical slot (dead slots included: ``live`` tells)."""
        return [bytes(self._sketches[j::BINS]) for j in range(BINS)]

    def live_columns(self, columns: list[bytes] | None = None) -> list[bytes]:
        """``columns`` (by default ``columns()``) cut to the live slots, oldest first. What is
        counted over the index (which bin values are common) must not count the zeros of the
        slots that growing by doubling leaves empty: an index and the same index saved and read
        back (which has none) would rank a suspect differently."""
        cols = columns if columns is not None else self.columns()
        start, end, slots = self._start, self._start + self._count, self.slots
        if end <= slots:
            return [column[start:end] for column in cols]
        return [column[start:] + column[: end - slots] for column in cols]

    def live(self, slot: int) -> bool:
        return (slot - self._start) % max(1, self.slots) < self._count

    def entry(self, slot: int) -> tuple[str, float, bytes]:
        """Subject, time and sketch of the entry in ``slot``."""
        return (
            self.names[self._subjects[slot]],
            float(self._times[slot]),
            bytes(self._sketches[slot * BINS : slot * BINS + BINS]),
        )

    def subjects_entries(self) -> dict[str, int]:
        """Live entries per subject."""
        counts: dict[int, int] = {}
        start, slots = self._start, self.slots
        for i in range(self._count):
            number = self._subjects[(start + i) % slots]
            counts[number] = counts.get(number, 0) + 1
        return {self.names[number]: n for number, n in counts.items()}

    # --- persistence ---------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the live entries to ``path`` (atomically: a temporary file, then a rename)."""
        sketches, subjects, times = self._ordered()
        names = json.dumps(self.names, ensure_ascii=False).encode()
        header = _HEADER.pack(
            MAGIC,
            VERSION,
            BINS,
            self._count,
            self.capacity,
            self.retention,
            self.sketcher.params,
            len(names),
        )
        parts = (header, names, subjects.tobytes(), times.tobytes(), bytes(sketches))
        crc = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
        target = Path(path)
        temporary = target.with_name(target.name + ".tmp")
        with temporary.open("wb") as out:
            for part in parts:
                out.write(part)
            out.write(_CRC.pack(crc))
        temporary.replace(target)

    @classmethod
    def load(cls, path: str | Path) -> ProvenanceIndex:
        """The index ``save`` wrote to ``path``; ProvenanceError naming what is wrong."""
        where = str(path)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ProvenanceError(f"cannot read the index: {exc.strerror}", where) from exc
        if len(data) < _HEADER.size + _CRC.size or data[:8] != MAGIC:
            raise ProvenanceError("not a guardrail provenance index (bad magic)", where)
        _, version, bins, count, capacity, retention, params, names_size = _HEADER.unpack_from(data)
        if version == 1:
            raise ProvenanceError(
                "index version 1: its sketches were made by an earlier guardrail's sketch and "
                "do not compare with this one's; it cannot be searched any more (start a new "
                "index: move this file away)",
                where,
            )
        if version != VERSION or bins != BINS:
            raise ProvenanceError(
                f"index version {version} with {bins} bins; this guardrail reads version "
                f"{VERSION} with {BINS}",
                where,
            )
        expected = _HEADER.size + names_size + count * ENTRY_BYTES + _CRC.size
        if len(data) != expected:
            raise ProvenanceError(
                f"truncated or padded: {len(data)} bytes where the header says {expected}",
                where,
            )
        (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
        if zlib.crc32(memoryview(data)[: -_CRC.size]) != crc:
            raise ProvenanceError("corrupt: the checksum does not match the contents", where)
        at = _HEADER.size
        try:
            names = json.loads(data[at : at + names_size])
        except ValueError as exc:
            raise ProvenanceError(f"corrupt subject table: {exc}", where) from exc
        at += names_size
        index = cls(max(capacity, count, 1), retention, Sketcher.from_params(params))
        index.names = [str(name) for name in names]
        index._ids = {name: number for number, name in enumerate(index.names)}
        index._subjects = array("I", data[at : at + 4 * count])
        index._times = array("I", data[at + 4 * count : at + 8 * count])
        index._sketches = bytearray(data[at + 8 * count : at + 8 * count + BINS * count])
        index._count = count
        if count and max(index._subjects) >= len(index.names):
            raise ProvenanceError("corrupt: an entry names a subject the table lacks", where)
        return index
