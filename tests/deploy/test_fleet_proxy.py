"""The README's "Deploying" snippets for a fleet of workers and for a proxy in front, run as
written: ``uvicorn app:app --workers 2`` on one Redis shares one set of limits, and behind a
reverse proxy (``uvicorn --no-proxy-headers``, the proxy in ``trusted_proxies``) a client's
own X-Forwarded-For chooses nothing; with uvicorn's proxy handling opened to every peer as
well (``--forwarded-allow-ips '*'``, common in container images), it chooses the client's
address, and guardrail says so. Real uvicorn processes, a real redis-server, a real proxy hop
on loopback."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path

import httpx
import pytest

from ._fleet_servers import PROXY_ADDRESS, client_from, proxy, uvicorn_cli

# -- the snippets, verbatim (README "Deploying") ---------------------------------------------

APP = """\
from fastapi import FastAPI, Request
from guardrail import Guardrail

app = FastAPI()

@app.get("/healthz")
async def healthz() -> dict:
    return {"ok": True}

@app.post("/v1/chat/completions")
async def chat(request: Request) -> dict:
    decision = request.state.guardrail  # what guardrail decided, and about whom
    return {"client": decision.subject.ip}

app = Guardrail(app, policy="guardrail.yaml")
"""

FLEET_POLICY = """\
version: 1
secret: env:GUARDRAIL_SECRET        # the same on every worker and host
storage: redis://127.0.0.1:6379/0   # one Redis: one set of limits for every worker
identity:
  api_key: {header: authorization}
routes:
  - name: inference
    match: {path: "/v1/chat/completions$", methods: [POST]}
    limits:
      - {per: api_key, rate: 10/hour, burst: 10}
audit:
  sink: "file://guardrail-audit-{pid}.jsonl"   # a trail per worker: one writer per chain
"""

PROXY_POLICY = """\
version: 1
secret: env:GUARDRAIL_SECRET
identity:
  client_ip:
    trusted_proxies: [127.0.0.2]   # your proxies' addresses, exactly
routes:
  - name: inference
    match: {path: "/v1/chat/completions$", methods: [POST]}
    limits:
      - {per: ip, rate: 3/hour, burst: 3}
"""

# test only: which worker answered (outside guardrail, so its 429s are counted too)
WORKER_TAG = """
import os

_inner = app

async def app(scope, receive, send):
    async def tagged(message):
        if message["type"] == "http.response.start":
            worker = (b"x-worker", str(os.getpid()).encode())
            message["headers"] = [*message.get("headers", []), worker]
        await send(message)
    await _inner(scope, receive, tagged)
"""


def deployment(directory: Path, policy: str, app: str = APP) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.py").write_text(app)
    (directory / "guardrail.yaml").write_text(policy)
    return directory


# -- multi-worker with Redis -----------------------------------------------------------------

BURST = 10


async def test_two_uvicorn_workers_on_one_redis_admit_exactly_the_burst(
    tmp_path: Path, redis_url: str
) -> None:
    # a long timeout: on a loaded test box a slow reply must not pass for a failure (fail_open
    # would then decide in each worker's own memory)
    policy = FLEET_POLICY.replace("redis://127.0.0.1:6379/0", redis_url + "?timeout=5")
    where = deployment(tmp_path / "fleet", policy, APP + WORKER_TAG)
    statuses: Counter[int] = Counter()
    workers: Counter[str] = Counter()
    admitted_by: Counter[str] = Counter()
    refused_by: set[str] = set()
    async with uvicorn_cli(where, "--workers", "2") as server:
        # A connection per request: the kernel hands each to whichever worker accepts first.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as http:
            sent = 0
            while sent < 40 or (len(workers) < 2 and sent < 400):
                replies = await asyncio.gather(
                    *(
                        http.post(
                            "/v1/chat/completions",
                            json={"model": "m", "messages": []},
                            headers={"authorization": "Bearer sk-fleet"},
                        )
                        for _ in range(20)
                    )
                )
                sent += len(replies)
                for reply in replies:
                    statuses[reply.status_code] += 1
                    workers[reply.headers["x-worker"]] += 1
                    if reply.status_code == 200:
                        admitted_by[reply.headers["x-worker"]] += 1
                    else:
                        refused_by.add(reply.headers["x-worker"])
    trails = sorted(p.name for p in where.glob("guardrail-audit-*.jsonl"))
    # What a limit per worker (memory storage) would have admitted of the same traffic
    apart = sum(min(answered, BURST) for answered in workers.values())
    print(
        f"\n--workers 2 on one Redis: {statuses[200]} of {sent} admitted (burst {BURST}), "
        f"answered by {dict(workers)}, admitted by {dict(admitted_by)} (a limit per worker: "
        f"{apart}); trails {trails}"
    )
    assert len(workers) == 2 and apart > BURST, f"one worker did the work:\n{server.log}"
    assert statuses == {200: BURST, 429: sent - BURST}, f"{dict(statuses)}:\n{server.log}"
    # {pid}: a trail per worker that recorded something: its refusals (allows are not
    # sampled), or the count of unmatched requests (the readiness probes of /healthz, to
    # whichever worker answered them: CI once saw a trail from a worker that refused nothing)
    named = {f"guardrail-audit-{pid}.jsonl" for pid in refused_by}
    assert named <= set(trails) <= {f"guardrail-audit-{pid}.jsonl" for pid in workers}


# -- behind a reverse proxy ------------------------------------------------------------------

CLIENTS = ("127.0.0.10", "127.0.0.11")
ATTEMPTS = 8


async def _spoofing_clients(proxy_url: str) -> tuple[dict[str, int], set[str]]:
    """Each client sends ATTEMPTS requests through the proxy, each with an X-Forwarded-For
    of its own invention; returns the requests admitted per client and the addresses the app
    was told."""
    admitted: dict[str, int] = {}
    told: set[str] = set()
    for n, address in enumerate(CLIENTS):
        admitted[address] = 0
        async with client_from(address, proxy_url) as http:
            for i in range(ATTEMPTS):
                reply = await http.post(
                    "/v1/chat/completions",
                    json={},
                    headers={"x-forwarded-for": f"198.51.100.{n * 100 + i + 1}"},
                )
                if reply.status_code == 200:
                    admitted[address] += 1
                    told.add(reply.json()["client"])
    return admitted, told


async def test_behind_a_proxy_the_client_chooses_nothing(tmp_path: Path) -> None:
    """The documented setup: uvicorn leaves X-Forwarded-For alone, guardrail believes it from
    the proxy only. A client that bypasses the proxy is its own TCP address."""
    where = deployment(tmp_path / "proxied", PROXY_POLICY)
    async with (
        uvicorn_cli(where, "--no-proxy-headers") as server,
        proxy(server.url) as proxy_url,
    ):
        admitted, told = await _spoofing_clients(proxy_url)
        async with client_from("127.0.0.12", server.url) as direct:
            bypass = [
                await direct.post(
                    "/v1/chat/completions", json={}, headers={"x-forwarded-for": f"192.0.2.{i}"}
                )
                for i in range(1, ATTEMPTS + 1)
            ]
    bypassed = [r.json()["client"] for r in bypass if r.status_code == 200]
    print(
        f"\n--no-proxy-headers, trusted_proxies [{PROXY_ADDRESS}]: admitted {admitted} "
        f"(burst 3, {ATTEMPTS} spoofed each), the app told {sorted(told)}; "
        f"bypassing the proxy: {len(bypassed)} admitted as {set(bypassed)}"
    )
    assert admitted == dict.fromkeys(CLIENTS, 3)
    assert told == set(CLIENTS)
    assert bypassed == ["127.0.0.12"] * 3
    assert "X-Forwarded-For" not in server.log  # nothing to warn of


@pytest.mark.parametrize(
    ("allow", "spoofable"),
    [
        (PROXY_ADDRESS, False),  # uvicorn trusts exactly the proxy: redundant, but exact
        ("*", True),  # uvicorn trusts every peer: the client writes its own address
    ],
)
async def test_uvicorn_proxy_handling_as_well_is_exact_only_for_the_same_proxies(
    tmp_path: Path, allow: str, spoofable: bool
) -> None:
    """Both layers read X-Forwarded-For: uvicorn first rewrites ``scope["client"]`` for the
    peers in --forwarded-allow-ips, so guardrail sees the client, never the proxy, and its
    trusted_proxies no longer decide. With exactly the proxy there, the outcome is the same;
    with '*', the leftmost address a client wrote becomes its identity, and guardrail warns."""
    where = deployment(tmp_path / "both", PROXY_POLICY)
    async with (
        uvicorn_cli(where, "--proxy-headers", "--forwarded-allow-ips", allow) as server,
        proxy(server.url) as proxy_url,
    ):
        admitted, told = await _spoofing_clients(proxy_url)
    warnings = re.findall(r"the server set the client address", server.log)
    print(
        f"\n--forwarded-allow-ips {allow!r} and trusted_proxies: admitted {admitted}, "
        f"{len(told)} addresses told to the app, {len(warnings)} warning(s)"
    )
    if spoofable:
        assert admitted == dict.fromkeys(CLIENTS, ATTEMPTS)  # every spoofed address its own
        assert len(warnings) == 1  # said once, at the first such request
    else:
        assert admitted == dict.fromkeys(CLIENTS, 3) and told == set(CLIENTS)
        assert warnings == []
