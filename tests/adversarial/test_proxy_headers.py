"""Finding 10 of issue 11: under uvicorn's default proxy handling, a client's own
X-Forwarded-For becomes ``scope["client"]`` before guardrail sees it, so per-ip limits key on
whatever the client wrote. guardrail cannot undo it; it says so, loudly, once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from guardrail import Guardrail, Policy

from .conftest import served

# No trusted proxy: guardrail takes the TCP peer as the client. The test client connects from
# 127.0.0.1, which uvicorn trusts by default (forwarded_allow_ips).
POLICY = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
routes:
  - name: api
    match: {path: /v1/}
    limits:
      - {per: ip, rate: 1/hour, burst: 5}
"""

ATTEMPTS = 30


async def _rotate(tmp_path: Path, **uvicorn: Any) -> int:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Guardrail(
        Starlette(routes=[Route("/{rest:path}", ok)]),
        policy=Policy.from_string(POLICY),
        audit=f"file://{tmp_path / 'audit.jsonl'}",
    )
    admitted = 0
    async with served(app, **uvicorn) as url, httpx.AsyncClient(base_url=url) as http:
        for i in range(ATTEMPTS):
            headers = {"x-forwarded-for": f"198.51.100.{i + 1}"}
            admitted += (await http.get("/v1/x", headers=headers)).status_code == 200
    return admitted


async def test_uvicorn_default_proxy_handling_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)  # uvicorn's default: 127.0.0.1
    with caplog.at_level(logging.WARNING, logger="guardrail"):
        escaped = await _rotate(tmp_path / "default")
        warned = [r for r in caplog.records if "forwarded" in r.getMessage().lower()]
        fixed = await _rotate(tmp_path / "fixed", proxy_headers=False)
    print(
        f"\ndefault uvicorn: {escaped} of {ATTEMPTS} admitted, {len(warned)} warning(s); "
        f"proxy_headers=False: {fixed} of {ATTEMPTS} admitted (burst 5)"
    )
    assert len(warned) == 1, "the rewritten client address went unreported"
    assert "proxy_headers" in warned[0].getMessage()
    assert fixed == 5


async def test_an_address_that_is_no_address_makes_bounded_keys_and_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same server setting hands guardrail any string the client writes as its address:
    16 KB of it made 16 KB bucket keys and risk principals per request, unreported."""
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)

    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Guardrail(
        Starlette(routes=[Route("/{rest:path}", ok)]),
        policy=Policy.from_string(POLICY),
        audit=f"file://{tmp_path / 'audit.jsonl'}",
    )
    with caplog.at_level(logging.WARNING, logger="guardrail"):
        async with served(app) as url, httpx.AsyncClient(base_url=url) as http:
            for i in range(20):
                headers = {"x-forwarded-for": f"{i:04d}" + "x" * 16_000}
                assert (await http.get("/v1/x", headers=headers)).status_code == 200
            keys = list(app.storage._subjects)  # type: ignore[attr-defined]
    longest = max(len(key) for key in keys)
    print(f"\n{len(keys)} buckets, the longest key {longest} characters (16,007 on base)")
    assert len(keys) == 20 and longest < 64
    warned = [r for r in caplog.records if "not an IP address" in r.getMessage()]
    assert len(warned) == 1
