"""Body reads with a deadline (deadlines.py, inspection.read_body): a stalled read ends in
BodyTimeout with what did arrive; a read in time leaves nothing behind; a cancellation that is
not the deadline's goes through."""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import Any

import pytest

from guardrail.deadlines import Deadlines
from guardrail.inspection import BodyTimeout, read_body

LATER = 3600.0  # a sweep "an hour from now": every deadline has passed


def stalling(*messages: dict[str, Any]) -> tuple[Any, asyncio.Event]:
    """A receive that hands out ``messages``, then waits until the event is set."""
    queue = list(messages)
    release = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        await release.wait()
        return {"type": "http.request", "body": b"}", "more_body": False}

    return receive, release


async def test_a_stalled_read_times_out_with_what_arrived_for_the_replay():
    deadlines = Deadlines(tick=LATER)  # swept by hand below: no waiting on the real clock
    first = {"type": "http.request", "body": b'{"a":', "more_body": True}
    receive, release = stalling(first)
    reading = asyncio.create_task(read_body(receive, 1024, deadlines, 5.0))
    await asyncio.sleep(0)  # the read is now waiting for more
    deadlines.sweep(monotonic() + 4.0)
    await asyncio.sleep(0)
    assert not reading.done()  # not yet due
    deadlines.sweep(monotonic() + 5.0)
    with pytest.raises(BodyTimeout) as timeout:
        await reading
    assert reading.cancelling() == 0  # the deadline's cancellation is taken back
    replay = timeout.value.replay
    assert await replay() == first  # what arrived, then the server's receive
    release.set()
    assert (await replay())["body"] == b"}"


async def test_a_read_in_time_leaves_nothing_to_cancel():
    deadlines = Deadlines(tick=LATER)
    receive, _ = stalling({"type": "http.request", "body": b"{}", "more_body": False})
    raw, _ = await read_body(receive, 1024, deadlines, 5.0)
    assert raw == b"{}"
    deadlines.sweep(monotonic() + LATER)  # this task is no longer watched: nothing cancelled
    await asyncio.sleep(0)
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0


async def test_another_cancellation_with_the_deadline_goes_through_as_cancelled():
    deadlines = Deadlines(tick=LATER)
    receive, _ = stalling()
    reading = asyncio.create_task(read_body(receive, 1024, deadlines, 5.0))
    await asyncio.sleep(0)
    deadlines.sweep(monotonic() + 10.0)
    reading.cancel()  # the server shutting down, say
    with pytest.raises(asyncio.CancelledError):
        await reading


async def test_the_timer_sweeps_while_reads_are_in_flight_and_stops_after():
    deadlines = Deadlines(tick=0.01)  # the one test on the loop's own timer
    receive, _ = stalling()
    with pytest.raises(BodyTimeout):
        await read_body(receive, 1024, deadlines, 0.02)
    for _ in range(100):  # the next tick finds nothing in flight and does not re-arm
        if deadlines._timer is None:
            break
        await asyncio.sleep(0.01)
    assert deadlines._timer is None and not deadlines._due


async def test_without_deadlines_a_read_is_as_before():
    receive, _ = stalling({"type": "http.request", "body": b"{}", "more_body": False})
    raw, _ = await read_body(receive, 1024)
    assert raw == b"{}"


async def test_a_body_the_server_holds_is_read_unwatched_and_one_that_waits_is_watched():
    deadlines = Deadlines(tick=LATER)
    held = {"type": "http.request", "body": b"{}", "more_body": False}

    async def at_hand() -> dict[str, Any]:
        return held

    assert (await read_body(at_hand, 1024, deadlines, 5.0))[0] == b"{}"
    assert deadlines._timer is None and not deadlines._due  # nothing watched, nothing armed

    first = {"type": "http.request", "body": b'{"a":', "more_body": True}
    receive, release = stalling(first)
    reading = asyncio.create_task(read_body(receive, 1024, deadlines, 5.0))
    await asyncio.sleep(0)
    assert list(deadlines._due) == [reading]  # waiting: watched
    release.set()
    raw, _ = await reading
    assert raw == b'{"a":}' and not deadlines._due


async def test_a_read_resumed_across_several_waits_gets_each_value_and_its_cancellation():
    """deadlines.Resumed drives a started coroutine as ``await`` would: values sent in at each
    wait, a cancellation thrown in (its cleanup runs), the result returned."""
    steps: list[str] = []
    gate = asyncio.Event()

    async def receive() -> dict[str, Any]:
        for _ in range(3):
            await asyncio.sleep(0)
        try:
            await gate.wait()
        finally:
            steps.append("cleaned up")
        return {"type": "http.request", "body": b"{}", "more_body": False}

    deadlines = Deadlines(tick=LATER)
    reading = asyncio.create_task(read_body(receive, 1024, deadlines, 5.0))
    for _ in range(5):
        await asyncio.sleep(0)
    gate.set()
    assert (await reading)[0] == b"{}" and steps == ["cleaned up"]

    gate.clear()
    steps.clear()
    reading = asyncio.create_task(read_body(receive, 1024, deadlines, 5.0))
    for _ in range(5):
        await asyncio.sleep(0)
    reading.cancel()  # the server's, not the deadline's
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert steps == ["cleaned up"] and not deadlines._due
