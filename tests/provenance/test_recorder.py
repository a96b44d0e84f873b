"""Recorder: outputs sketched off the request path, saved per worker slot, never lost silently."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path

from guardrail.provenance import sketch as sketch_module
from guardrail.provenance.index import ProvenanceIndex
from guardrail.provenance.normalize import normalized
from guardrail.provenance.recorder import BATCH, Recorder
from guardrail.provenance.sketch import Sketcher
from guardrail.simulate import leaks

ACCOUNT = leaks.LeakAccount("benign", 0, 40)
TEXTS = list(leaks.outputs(5, ACCOUNT))


def recorder(tmp_path: Path, clock, *, key: bytes = b"", **options) -> Recorder:
    settings = {"capacity": 1000, "retention": 86400.0, "save_every": 60.0} | options
    return Recorder(
        str(tmp_path / "prov-{worker}.grprov"), sketcher=Sketcher(key), clock=clock, **settings
    )


def completion(text: str) -> bytes:
    return json.dumps({"choices": [{"message": {"content": text}}]}).encode()


async def test_outputs_are_sketched_and_saved_at_shutdown(tmp_path: Path, clock):
    rec = recorder(tmp_path, clock)
    await rec.start()
    for i, text in enumerate(TEXTS[:20]):
        rec.offer("a:alice" if i % 2 else "a:bob", completion(text), clock())
    rec.offer("a:carol", [TEXTS[20], TEXTS[21]], clock())  # a stream with two choices
    rec.offer("a:dave", b"{not json", clock())  # malformed: nothing, and nothing breaks
    await rec.close()
    saved = ProvenanceIndex.load(tmp_path / "prov-0.grprov")
    assert len(saved) == 22 == rec.added
    assert saved.subjects_entries() == {"a:alice": 10, "a:bob": 10, "a:carol": 2}
    assert rec.saves == 1 and not (tmp_path / "prov-0.grprov.tmp").exists()


async def test_outputs_sketched_together_keep_their_own_sketches(tmp_path: Path, clock):
    rec = recorder(tmp_path, clock)
    await rec.start()
    for i, text in enumerate(TEXTS[:30]):  # queued before the task runs: drained BATCH at a time
        rec.offer(f"a:{i}", completion(text), clock() + i)
    await rec.settled()
    sketcher = Sketcher()
    expected = [(f"a:{i}", int(clock()) + i, sketcher.sketch(t)) for i, t in enumerate(TEXTS[:30])]
    assert [rec.index.entry(slot) for slot in range(30)] == expected
    await rec.close()


async def test_under_light_load_outputs_wait_to_be_sketched_a_batch_at_a_time(
    tmp_path: Path, clock, monkeypatch
):
    """One output at a time, the task running between them: it holds them until BATCH wait
    (one text alone costs ~2x the CPU a KB of 8 together), then sketches them together; what
    it holds is sketched before a save, at settled() and at shutdown, so that nothing waits
    past the moment it could be read."""
    batches: list[int] = []
    original = Sketcher.sketch_many

    def counted(self: Sketcher, texts: list[str]) -> list[bytes | None]:
        batches.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(Sketcher, "sketch_many", counted)
    rec = recorder(tmp_path, clock)
    await rec.start()
    for i, text in enumerate(TEXTS[:19]):
        rec.offer(f"a:{i}", completion(text), clock())
        for _ in range(3):
            await asyncio.sleep(0)  # the task takes it, alone in the queue
    assert batches == [BATCH, BATCH] and rec.added == 2 * BATCH
    await rec.settled()
    assert batches == [BATCH, BATCH, 3] and rec.added == 19
    rec.offer("a:late", completion(TEXTS[19]), clock())
    await asyncio.sleep(0)
    clock.advance(61)  # a save is due: what is held goes in first
    rec.offer("a:later", completion(TEXTS[20]), clock())
    await rec.settled()
    assert batches[3:] == [2] and rec.saves == 1
    assert len(ProvenanceIndex.load(tmp_path / "prov-0.grprov")) == 21
    rec.offer("a:last", completion(TEXTS[21]), clock())
    await rec.close()
    assert batches[4:] == [1] and len(ProvenanceIndex.load(tmp_path / "prov-0.grprov")) == 22


async def test_a_settled_cancelled_while_the_queue_is_full_leaves_the_task_sleeping(
    tmp_path: Path, clock
):
    """Cancelled waiting for room, ``settled`` has put no marker: the task must not believe one
    is coming (it would spin without yielding, and the loop with it)."""
    rec = recorder(tmp_path, clock, queue_size=3)
    await rec.start()
    for text in TEXTS[:3]:  # the task has not run yet: the queue is full
        rec.offer("a:alice", completion(text), clock())
    waiting = asyncio.create_task(rec.settled())
    await asyncio.sleep(0)  # settled() waits for room in the full queue
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    for _ in range(5):
        await asyncio.sleep(0)  # the loop goes on: the task drained the queue and sleeps
    rec.offer("a:bob", completion(TEXTS[3]), clock())
    await asyncio.wait_for(rec.settled(), 10)
    assert rec.added == 4
    await asyncio.wait_for(rec.close(), 10)


async def test_settled_waits_for_what_was_offered_before_it_not_after(tmp_path: Path, clock):
    rec = recorder(tmp_path, clock, save_every=3600.0)
    await rec.start()
    for text in TEXTS[:20]:
        rec.offer("a:alice", completion(text), clock())

    async def late() -> None:  # a request that ends while settled() waits
        await asyncio.sleep(0)
        rec.offer("a:late", completion(TEXTS[20]), clock())

    offered = asyncio.create_task(late())
    await asyncio.wait_for(rec.settled(), 10)  # not save_every
    assert rec.added >= 20
    await offered
    await rec.close()
    assert rec.added == 21


async def test_an_output_that_cannot_be_sketched_costs_only_itself(
    tmp_path: Path, clock, caplog, monkeypatch
):
    def failing(text: str) -> bytes:  # a fault in normalisation, for one text only
        if text == "odd one out " * 10:
            raise ValueError("odd")
        return normalized(text)

    monkeypatch.setattr(sketch_module, "normalized", failing)
    rec = recorder(tmp_path, clock)
    await rec.start()
    for text in [*TEXTS[:3], "odd one out " * 10, *TEXTS[3:6]]:
        rec.offer("a:alice", completion(text), clock())
    with caplog.at_level(logging.ERROR, logger="guardrail"):
        await rec.settled()
    assert rec.added == 6
    assert [r.getMessage() for r in caplog.records] == [
        "guardrail: provenance: an output could not be sketched"
    ]
    await rec.close()


async def test_a_save_comes_every_save_every_with_expired_entries_dropped(tmp_path: Path, clock):
    rec = recorder(tmp_path, clock, retention=3600.0)
    await rec.start()
    rec.offer("a:old", completion(TEXTS[0]), clock())
    await rec.settled()
    assert rec.added == 1 and rec.saves == 0  # not due yet
    clock.advance(3601)  # the first entry is past retention, and a save is due
    rec.offer("a:new", completion(TEXTS[1]), clock())
    await rec.settled()
    assert rec.saves == 1
    saved = ProvenanceIndex.load(tmp_path / "prov-0.grprov")
    assert saved.subjects_entries() == {"a:new": 1}
    assert saved.names == ["a:new"]  # the expired subject's name is not kept either
    await rec.close()


async def test_a_full_queue_drops_the_newest_counted_and_logged(tmp_path: Path, clock, caplog):
    rec = recorder(tmp_path, clock, queue_size=3)
    await rec.start()
    with caplog.at_level(logging.WARNING, logger="guardrail"):
        for text in TEXTS[:5]:  # the task has not run yet: the queue holds 3
            rec.offer("a:alice", completion(text), clock())
    assert rec.dropped == 2
    warnings = [r.getMessage() for r in caplog.records if "queue full" in r.getMessage()]
    assert len(warnings) == 1 and "2 in all" not in warnings[0]  # one warning per interval
    assert "1 served output(s) not sketched" in warnings[0]
    await rec.close()
    assert len(ProvenanceIndex.load(tmp_path / "prov-0.grprov")) == 3
    assert any("2 served output(s) were dropped" in r.getMessage() for r in caplog.records)


async def test_workers_take_slots_of_their_own_and_a_restart_takes_its_slot_up(
    tmp_path: Path, clock
):
    first, second = recorder(tmp_path, clock), recorder(tmp_path, clock)
    await first.start()
    await second.start()
    assert (first.path, second.path) == (tmp_path / "prov-0.grprov", tmp_path / "prov-1.grprov")
    first.offer("a:alice", completion(TEXTS[0]), clock())
    second.offer("a:bob", completion(TEXTS[1]), clock())
    await first.close()
    await second.close()
    again = recorder(tmp_path, clock, capacity=5000)
    await again.start()  # slot 0 is free again: its file is taken up
    assert again.path == tmp_path / "prov-0.grprov"
    assert again.index.subjects_entries() == {"a:alice": 1} and again.index.capacity == 5000
    await again.close()


async def test_a_file_of_another_key_is_set_aside_not_overwritten(tmp_path: Path, clock, caplog):
    rec = recorder(tmp_path, clock)
    await rec.start()
    rec.offer("a:alice", completion(TEXTS[0]), clock())
    await rec.close()
    rekeyed = recorder(tmp_path, clock, key=b"another key")
    with caplog.at_level(logging.WARNING, logger="guardrail"):
        await rekeyed.start()
    assert len(rekeyed.index) == 0
    (aside,) = await asyncio.to_thread(lambda: list(tmp_path.glob("prov-0.grprov.*.old")))
    assert ProvenanceIndex.load(aside).subjects_entries() == {"a:alice": 1}
    assert any("another key" in r.getMessage() for r in caplog.records)
    await rekeyed.close()


async def test_a_path_nobody_can_write_is_refused_at_startup(tmp_path: Path, clock):
    import pytest

    from guardrail.errors import ProvenanceError

    rec = Recorder(
        str(tmp_path / "missing" / "prov-{worker}.grprov"),
        capacity=10,
        retention=60.0,
        save_every=60.0,
        sketcher=Sketcher(),
        clock=clock,
    )
    with pytest.raises(ProvenanceError, match=r"missing/prov-0\.grprov\.lock: cannot create"):
        await rec.start()


async def test_without_numpy_it_sketches_the_same_and_says_it_is_slower(
    tmp_path: Path, clock, caplog, monkeypatch
):
    with_numpy = Sketcher()
    assert with_numpy.vectorised
    monkeypatch.setattr(sketch_module, "_vectorised", None)
    rec = recorder(tmp_path, clock)
    with caplog.at_level(logging.WARNING, logger="guardrail"):
        await rec.start()
    assert any("pip install 'guardrail[provenance]'" in r.getMessage() for r in caplog.records)
    rec.offer("a:alice", completion(TEXTS[0]), clock())
    await rec.close()
    saved = ProvenanceIndex.load(tmp_path / "prov-0.grprov")
    assert saved.entry(0)[2] == with_numpy.sketch(TEXTS[0])
