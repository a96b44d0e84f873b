"""Finding 13 of issue 11: an IPv6 client owns a whole /64 (SLAAC, privacy addresses), so
``per: ip`` must not key on the /128 it can rotate at will."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from guardrail import Guardrail, Policy

from .conftest import served

# uvicorn on ::1 cannot rotate source addresses: a trusted proxy on 127.0.0.1 forwards them.
POLICY = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
identity:
  client_ip: {trusted_proxies: [127.0.0.1/32]}
routes:
  - name: api
    match: {path: /v1/}
    limits:
      - {per: ip, rate: 1/hour, burst: 5}
"""

ATTEMPTS = 40


async def test_rotating_inside_one_64_hits_the_per_ip_limit(tmp_path: Path) -> None:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Guardrail(
        Starlette(routes=[Route("/{rest:path}", ok)]),
        policy=Policy.from_string(POLICY),
        audit=f"file://{tmp_path / 'audit.jsonl'}",
    )
    statuses = []
    async with served(app, proxy_headers=False) as url, httpx.AsyncClient(base_url=url) as http:
        for _ in range(ATTEMPTS):
            # a fresh interface id every time, inside 2001:db8:1:2::/64
            address = "2001:db8:1:2:" + ":".join(secrets.token_hex(2) for _ in range(4))
            response = await http.get("/v1/x", headers={"x-forwarded-for": address})
            statuses.append(response.status_code)
    admitted = statuses.count(200)
    print(f"\n{admitted} of {ATTEMPTS} admitted from one /64 (burst 5)")
    assert admitted == 5
