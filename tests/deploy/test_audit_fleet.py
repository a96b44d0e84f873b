"""Issue 12, items 7, 8 and 9: the audit trail of a fleet of workers.

7. ``guardrail audit summary/tail/verify`` took one file, while ``uvicorn --workers 2`` with
   ``file://audit-{pid}.jsonl`` writes one per worker (and rotates each).
8. Two workers on one Redis stream interleaved two hash chains with no writer id, and the CLI
   could not read a stream at all.
9. A Redis stall duplicated stream records (a timed-out XADD was re-sent, and the first one
   landed when the stalled link moved again) and broke the chain; under ``CLIENT PAUSE WRITE``
   the writer gave up after its few retries with its queue nearly empty: records were lost.

Fixed outcome: the CLI reads every worker's files (a glob) and the stream, merged by time,
verifies each writer's chain; the stall costs no record and duplicates none.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
from collections.abc import Awaitable, Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from tests.adversarial.conftest import served

from guardrail import Guardrail, Policy
from guardrail.audit.record import parse_ts
from guardrail.cli import main

from ._audit_servers import POLICY, policy_file, server, stop
from ._stall_proxy import stall_proxy

REQUESTS = 120


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


async def _spread(url: str, count: int) -> None:
    """``count`` requests, each on a connection of its own, 20 at a time: both workers serve."""
    limit = asyncio.Semaphore(20)

    async def one(n: int) -> None:
        async with limit, httpx.AsyncClient(base_url=url, timeout=10) as client:
            response = await client.get(f"/page/{n}")
            assert response.status_code == 200

    await asyncio.gather(*(one(n) for n in range(count)))


def test_cli_reads_every_worker_file_and_verifies_each_chain(tmp_path: Path) -> None:
    trails = tmp_path / "trails"
    policy = policy_file(tmp_path, max_bytes=8_000)  # a few records a file: many rotations
    sink = f"file://{trails}/audit-{{pid}}.jsonl"
    with server("uvicorn", policy, sink, "--workers", "2") as (url, process):
        asyncio.run(_spread(url, REQUESTS))
        stop(process)
    files = sorted(p.name for p in trails.iterdir())
    assert len({name.split(".")[0] for name in files}) == 2  # two workers' trails
    assert any(name.endswith(".jsonl.1") for name in files)  # rotated
    pattern = f"{trails}/audit-*.jsonl*"

    code, report = cli("audit", "verify", pattern)
    assert code == 0, report
    assert report.count("hash chain intact") == 2

    code, text = cli("audit", "summary", "--json", pattern)
    data = json.loads(text)
    assert (code, data["records"], len(data["writers"])) == (0, REQUESTS, 2)

    code, text = cli("audit", "tail", pattern)
    stamps = [parse_ts(line[:24]) for line in text.splitlines()]
    assert code == 0 and len(stamps) == REQUESTS
    assert stamps == sorted(stamps)  # merged by time


def test_two_workers_on_one_stream_are_verified_writer_by_writer(
    tmp_path: Path, redis_url: str
) -> None:
    stream = f"{redis_url}?stream=fleet"
    with server("uvicorn", policy_file(tmp_path), stream, "--workers", "2") as (url, process):
        asyncio.run(_spread(url, REQUESTS))
        stop(process, signal.SIGTERM)

    code, report = cli("audit", "verify", stream)
    assert code == 0, report
    assert f"OK: {REQUESTS} records in {stream} by 2 writers" in report
    code, text = cli("audit", "summary", "--json", stream)
    data = json.loads(text)
    assert (code, data["records"], len(data["writers"])) == (0, REQUESTS, 2)
    code, text = cli("audit", "tail", "-n", "5", stream)
    assert code == 0 and len(text.splitlines()) == 5


async def _through_a_stall(
    guard: Guardrail, stall: Callable[[], Awaitable[None]], stream: str, admin: Any
) -> tuple[list[dict[str, Any]], int]:
    """20 requests, then ``stall()`` and a steady trickle of requests for 4.5 s, then 20 more;
    every stream record, and how many requests were served."""
    async with served(guard) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        for n in range(20):
            assert (await client.get(f"/before/{n}")).status_code == 200
        await guard.audit.flush()
        await stall()
        loop = asyncio.get_running_loop()
        started = loop.time()
        during = 0
        while loop.time() - started < 4.5:  # traffic goes on through the stall
            assert (await client.get(f"/during/{during}")).status_code == 200
            during += 1
            await asyncio.sleep(0.02)  # a steady trickle of requests, on the real clock
        await asyncio.sleep(1.0)  # past the stall
        for n in range(20):
            assert (await client.get(f"/after/{n}")).status_code == 200
    entries: Any = await admin.xrange(stream)
    return [json.loads(fields[b"record"]) for _, fields in entries], 40 + during


def _guard(sink: str) -> Guardrail:
    policy = Policy.from_string(POLICY % {"burst": 100_000, "max_bytes": 100_000_000})
    return Guardrail(_app(), policy=policy, audit=sink)


async def test_five_seconds_of_client_pause_write_lose_nothing(redis_url: str) -> None:
    stream = f"{redis_url}?stream=paused"
    guard = _guard(f"{stream}&timeout=0.5")
    admin = aioredis.from_url(redis_url)

    async def pause() -> None:
        await admin.execute_command("CLIENT", "PAUSE", "5000", "WRITE")

    try:
        records, served_count = await _through_a_stall(guard, pause, "paused", admin)
    finally:
        await admin.aclose()
    ids = [record["request_id"] for record in records]
    assert (len(ids), len(set(ids)), guard.audit.lost) == (served_count, served_count, 0)
    code, report = cli("audit", "verify", stream)
    assert code == 0, report


async def test_a_stalled_link_duplicates_nothing(redis_url: str, redis_server: Any) -> None:
    admin = aioredis.from_url(redis_url)
    async with stall_proxy(redis_server.port) as proxy:
        guard = _guard(f"redis://127.0.0.1:{proxy.port}/0?stream=stalled&timeout=0.5")

        async def hold() -> None:
            proxy.hold(3.0)  # the XADD on the way times out, then lands after its retry

        try:
            records, served_count = await _through_a_stall(guard, hold, "stalled", admin)
        finally:
            await admin.aclose()
    ids = [record["request_id"] for record in records]
    assert (len(ids), len(set(ids)), guard.audit.lost) == (served_count, served_count, 0)
    code, report = cli("audit", "verify", f"{redis_url}?stream=stalled")
    assert code == 0, report


def _app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def page(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/{rest:path}", page)])
