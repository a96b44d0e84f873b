"""Live reload on a real uvicorn under load (issue 16): the policy file rewritten between two
valid policies and a real SIGHUP sent 20 times while 8 clients keep asking; not one request
fails (no 5xx, no connection error), each is decided and recorded on one policy, and the trail
holds the 20 reloads."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import time
from pathlib import Path

import httpx
from tests.deploy._audit_servers import server, stop

from guardrail import Policy

POLICY = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
reload: {sighup: true}
routes:
  - name: pages-%(name)s
    match: {path: /}
    headers: true
    limits:
      - {per: ip, rate: 1/hour, burst: %(burst)d}
audit:
  sample_allowed: 1.0
"""
BURSTS = {"a": 100_000, "b": 200_000}
CLIENTS = 8
RELOADS = 20
PER_POLICY = 2 * CLIENTS  # requests served under each policy before the next reload


def text(name: str) -> str:
    return POLICY % {"name": name, "burst": BURSTS[name]}


def rewrite(path: Path, name: str) -> None:
    staging = path.with_suffix(".new")
    staging.write_text(text(name))
    os.replace(staging, path)  # never half a file, whoever reads it


async def test_twenty_sighup_reloads_under_load_fail_no_request(tmp_path: Path) -> None:
    policy, trail = tmp_path / "policy.yaml", tmp_path / "audit.jsonl"
    rewrite(policy, "a")
    failures: list[str] = []
    seen: dict[str, int] = {}
    with server("uvicorn", policy, f"file://{trail}", log=tmp_path / "server.log") as (
        url,
        process,
    ):
        done = asyncio.Event()

        async def load(http: httpx.AsyncClient) -> None:
            while not done.is_set():
                try:
                    response = await http.get("/page")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                limit = response.headers.get("x-ratelimit-limit-requests", "none")
                seen[limit] = seen.get(limit, 0) + 1

        async def in_force(http: httpx.AsyncClient, name: str) -> None:
            deadline = time.monotonic() + 10
            while True:
                response = await http.get("/probe")
                if response.headers["x-ratelimit-limit-requests"] == str(BURSTS[name]):
                    return
                assert time.monotonic() < deadline, f"policy {name} not in force after SIGHUP"
                await asyncio.sleep(0.01)  # a real server's reload: real time

        async def served_more(n: int) -> None:
            target, deadline = sum(seen.values()) + n, time.monotonic() + 10
            while sum(seen.values()) < target:
                assert time.monotonic() < deadline, f"{n} requests not served in 10s"
                await asyncio.sleep(0.01)

        limits = httpx.Limits(max_connections=CLIENTS + 1)
        async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as http:
            loaders = [asyncio.ensure_future(load(http)) for _ in range(CLIENTS)]
            started = time.monotonic()
            for n in range(RELOADS):
                name = "b" if n % 2 == 0 else "a"
                rewrite(policy, name)
                process.send_signal(signal.SIGHUP)
                await in_force(http, name)
                await served_more(PER_POLICY)  # each policy under load for a while
            elapsed = time.monotonic() - started
            done.set()
            await asyncio.gather(*loaders)
        # SIGTERM: the trail flushed (uvicorn exits by the signal it caught, once shut down)
        assert stop(process) == -signal.SIGTERM
    assert failures == []
    served = sum(seen.values())
    assert set(seen) == {str(b) for b in BURSTS.values()} and served >= RELOADS * PER_POLICY
    records = [json.loads(line) for line in trail.read_text().splitlines()]
    reloads = [r for r in records if r["action"] == "policy_reload"]
    assert len(reloads) == RELOADS
    assert [r["trigger"] for r in reloads] == ["sighup"] * RELOADS
    assert all(r["previous"] == p["policy"] for p, r in itertools.pairwise(reloads))
    # every request recorded on one policy: its route's name and its hash agree
    names = {Policy.from_string(text(n)).digest: f"pages-{n}" for n in BURSTS}
    assert {r["policy"] for r in reloads} == set(names)
    decided = [r for r in records if r["action"] == "allow"]
    assert len(decided) >= served
    assert all(names[r["policy"]] == r["route"] for r in decided)
    print(f"{served} requests over {RELOADS} reloads in {elapsed:.1f}s, none failed")


def workers(parent: int) -> list[int]:
    """uvicorn's worker processes under ``parent`` (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    found = []
    for pid in children:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"multiprocessing.spawn" in command and b"resource_tracker" not in command:
            found.append(int(pid))
    return found


async def test_with_workers_each_worker_reloads_on_its_own_sighup(tmp_path: Path) -> None:
    # uvicorn's supervisor takes SIGHUP to restart its workers (new processes: memory:// buckets
    # start empty); a live reload is SIGHUP sent to each worker, which handles its own.
    policy, trails, log = tmp_path / "policy.yaml", tmp_path / "trails", tmp_path / "server.log"
    rewrite(policy, "a")
    sink = f"file://{trails}/audit-{{pid}}.jsonl"
    with server("uvicorn", policy, sink, "--workers", "2", log=log) as (url, process):
        deadline = time.monotonic() + 20
        while log.read_text().count("Application startup complete") < 2:  # SIGHUP handled
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.05)  # real worker processes starting
        pids = workers(process.pid)
        assert len(pids) == 2
        rewrite(policy, "b")
        for pid in pids:
            os.kill(pid, signal.SIGHUP)
        in_force = 0
        while in_force < 20:  # on connections of their own: either worker answers
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                response = await http.get("/probe")
            assert response.status_code == 200
            fresh = response.headers["x-ratelimit-limit-requests"] == str(BURSTS["b"])
            in_force = in_force + 1 if fresh else 0
            assert time.monotonic() < deadline + 10, "the workers did not all reload"
        assert workers(process.pid) == pids  # reloaded, not restarted
        stop(process)
    new = Policy.from_string(text("b")).digest
    for trail in sorted(trails.iterdir()):
        records = [json.loads(line) for line in trail.read_text().splitlines()]
        reloads = [r for r in records if r["action"] == "policy_reload"]
        assert [(r["trigger"], r["policy"]) for r in reloads] == [("sighup", new)]
    assert len(list(trails.iterdir())) == 2
