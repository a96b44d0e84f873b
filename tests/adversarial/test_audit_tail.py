"""Issue 11, finding 14: a client puts terminal control sequences in what the audit trail
records (a percent-encoded path decodes to raw ESC, CR and LF in ``scope["path"]``), and an
operator reads the trail with ``guardrail audit tail``.

Fixed outcome: every record is still one line of the tail, and no character that could move the
cursor, recolour the screen, retitle the window or reorder text reaches the operator's terminal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from guardrail import Guardrail
from guardrail.cli import main
from guardrail.policy import Policy

from .conftest import served

POLICY = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
routes:
  - name: inference
    match: {path: /v1/}
audit:
  sink: file://%(path)s
  sample_allowed: 1.0
"""

#: ESC [2J (clear the screen), OSC 0 (retitle the window), CR LF (forge a line of the tail),
#: U+202E (reverse what follows), C1 CSI.
HOSTILE = [
    "/v1/%1b%5b2J%1b%5b31mBLOCKED-NOTHING",
    "/v1/%1b%5d0%3bpwned%07",
    "/v1/x%0d%0a2026-01-01T00:00:00.000Z%20allow%20forged",
    "/v1/%e2%80%aeevil",
    "/v1/%c2%9b31m",
]


async def test_control_sequences_a_client_sends_never_reach_the_operators_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trail = tmp_path / "audit.jsonl"

    async def ok(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    guard = Guardrail(
        Starlette(routes=[Route("/{rest:path}", ok)]),
        policy=Policy.from_string(POLICY % {"path": trail}),
    )
    async with served(guard) as base, httpx.AsyncClient(base_url=base) as client:
        for path in HOSTILE:  # each answered by the app (a 404 for the CR LF one), each recorded
            assert (await client.get(path)).status_code in (200, 404)
    records = [json.loads(line) for line in trail.read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(HOSTILE)
    assert "\x1b" in records[0]["path"] and "\r\n" in records[2]["path"]  # as the client sent

    assert main(["audit", "tail", str(trail)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == len(HOSTILE)  # no forged line
    printed = set(out) - {"\n"}
    unsafe = sorted(ch for ch in printed if not ch.isprintable())
    assert unsafe == [], f"reached the terminal: {unsafe!r}"
    assert all("forged" not in line.split()[0] for line in lines)
