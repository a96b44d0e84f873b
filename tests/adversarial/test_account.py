"""Findings 4 and 3 of issue 11: the account header names the principal, so it is believed only
from a trusted proxy, and a client cannot make it (or anything else identity keys on) large."""

from __future__ import annotations

import asyncio
import gc
import re
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from guardrail import Guardrail, Policy

from .conftest import rss_bytes, served


def ok_app() -> Starlette:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/{rest:path}", ok, methods=["GET", "POST"])])


def guarded(policy: str, tmp_path: Path, **options: Any) -> Guardrail:
    return Guardrail(
        ok_app(),
        policy=Policy.from_string(policy),
        audit=f"file://{tmp_path / 'audit.jsonl'}",
        **options,
    )


# The test client connects from 127.0.0.1, which these policies do not trust as a proxy: it is
# an internet client that reads the code.
LIMITED = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
identity:
  account: {header: x-account-id}
  client_ip: {trusted_proxies: [10.0.0.1]}
routes:
  - name: api
    match: {path: /v1/}
    limits:
      - {per: account, rate: 1/hour, burst: 3}
"""

# Every assessed request is blocked (score 0 is in the block band): only `allow:` passes.
ALLOWED = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
identity:
  account: {header: x-account-id}
  client_ip: {trusted_proxies: [10.0.0.1]}
allow: {accounts: [partner]}
thresholds:
  - {score: 0, action: block}
routes:
  - name: api
    match: {path: /v1/}
"""


async def test_a_random_account_header_does_not_renew_a_limited_key(tmp_path: Path) -> None:
    app = guarded(LIMITED, tmp_path)
    key = {"authorization": "Bearer sk-attacker"}
    async with served(app, proxy_headers=False) as url, httpx.AsyncClient(base_url=url) as http:
        # The key's own budget (an account limit falls back to the key): 3 served, then 429.
        plain = [(await http.get("/v1/x", headers=key)).status_code for _ in range(4)]
        # The same key, a fresh account header on every request: each was a new bucket.
        rotated = [
            (
                await http.get("/v1/x", headers={**key, "x-account-id": secrets.token_hex(8)})
            ).status_code
            for _ in range(20)
        ]
    print(f"\nkey alone: {plain}; then {rotated.count(200)} of 20 served with random accounts")
    assert plain == [200, 200, 200, 429]
    assert rotated.count(200) == 0, f"{rotated.count(200)} of 20 served with random accounts"


async def test_claiming_an_allowed_account_does_not_skip_the_risk_engine(tmp_path: Path) -> None:
    app = guarded(ALLOWED, tmp_path)
    key = {"authorization": "Bearer sk-attacker"}
    async with served(app, proxy_headers=False) as url, httpx.AsyncClient(base_url=url) as http:
        plain = (await http.get("/v1/x", headers=key)).status_code
        claimed = (await http.get("/v1/x", headers={**key, "x-account-id": "partner"})).status_code
    print(f"\nblocked key: {plain}; the same key claiming the allowed account: {claimed}")
    assert plain == 403
    assert claimed == 403, "claiming the allow-listed account skipped the risk engine"


# 127.0.0.1 is the trusted proxy here: the attacker is behind it (a proxy that passes the
# client's header through is the deployment's bug, but size must be bounded regardless). The
# risk engine is on: it keeps state per principal, and the account is the principal.
TRUSTED = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
identity:
  account: {header: x-account-id}
  client_ip: {trusted_proxies: [127.0.0.1/32]}
thresholds:
  - {score: 90, action: block}
routes:
  - name: api
    match: {path: /v1/}
    limits:
      - {per: ip, rate: 1/hour, burst: 1}
      - {per: account, rate: 1/hour, burst: 1}
"""

HUGE = 65_000
COUNT = 3_000


async def _flood(url: str, count: int, connections: int = 4) -> list[int]:
    """``count`` GETs with a fresh huge account each, over keep-alive connections: written by
    hand, as an HTTP client's own cost per 65 KB header would dominate the run."""
    host, port = url.removeprefix("http://").split(":")
    statuses: list[int] = []

    async def connection(n: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        for _ in range(n):
            account = secrets.token_hex(8) + "a" * HUGE
            writer.write(
                f"GET /v1/x HTTP/1.1\r\nhost: {host}\r\nx-account-id: {account}\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            statuses.append(int(head.split(b" ", 2)[1]))
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
        writer.close()
        await writer.wait_closed()

    share = [count // connections + (i < count % connections) for i in range(connections)]
    await asyncio.gather(*(connection(n) for n in share))
    return statuses


async def test_huge_account_ids_do_not_grow_the_server(tmp_path: Path) -> None:
    app = guarded(TRUSTED, tmp_path)
    async with served(app, proxy_headers=False) as url:
        await _flood(url, 200)  # warm up: connections, caches, allocator arenas
        gc.collect()
        before = rss_bytes()
        statuses = await _flood(url, COUNT)
        gc.collect()
        grown = rss_bytes() - before
    print(f"\n{COUNT} requests with {HUGE} B accounts: RSS +{grown / 1e6:.1f} MB")
    assert grown < 30e6, f"RSS grew {grown / 1e6:.0f} MB for {COUNT} refused requests"
    assert statuses.count(429) == COUNT


@pytest.mark.redis
async def test_huge_account_ids_do_not_grow_redis(tmp_path: Path, redis_url: str) -> None:
    app = guarded(TRUSTED, tmp_path, storage=redis_url)
    redis = aioredis.from_url(redis_url)
    try:
        async with served(app, proxy_headers=False) as url:
            await _flood(url, 10)
            before = (await redis.info("memory"))["used_memory"]
            statuses = await _flood(url, COUNT)
            grown = (await redis.info("memory"))["used_memory"] - before
            longest = max([len(k) async for k in redis.scan_iter(count=1000)])
    finally:
        await redis.aclose()
    print(f"\n{COUNT} requests with {HUGE} B accounts: used_memory +{grown / 1e6:.1f} MB")
    assert grown < 5e6, f"Redis used_memory grew {grown / 1e6:.0f} MB for {COUNT} requests"
    assert longest < 300, f"a Redis key of {longest} bytes"
    assert statuses.count(429) == COUNT
