"""Record builders and trail readers shared by the audit tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from guardrail.audit.record import format_ts

T0 = 1_795_874_400.0  # 2026-11-28T14:00:00Z


def make_record(i: int, *, at: float | None = None, **overrides: Any) -> dict[str, Any]:
    """A record in SPEC §4 key order, without "prev" (as the middleware hands it over)."""
    record: dict[str, Any] = {
        "ts": format_ts(T0 + i if at is None else at),
        "request_id": f"req-{i:06d}",
        "policy": "sha256:" + "ab" * 32,
        "mode": "enforce",
        "route": "inference",
        "method": "POST",
        "path": "/v1/chat/completions",
        "subject": {
            "api_key": "k:" + f"{i % 7:032x}",
            "ip": "203.0.113.7",
            "subnet": "203.0.113.0/24",
        },
        "action": "limit",
        "tier": None,
        "score": 12.5,
        "signals": {"timing_regularity": 10.0, "prompt_templating": 2.5},
        "limit": {"per": "api_key", "rate": "60/minute", "remaining": 0, "retry_after": 4},
        "status": 429,
    }
    record.update(overrides)
    return record


def trail_lines(path: Path) -> list[str]:
    """Every line of PATH.N … PATH.1, PATH (oldest first), newline stripped."""
    rotated = sorted(
        (p for p in path.parent.iterdir() if p.name.startswith(path.name + ".")),
        key=lambda p: -int(p.name.rsplit(".", 1)[1]),
    )
    files = [*rotated, path] if path.exists() else rotated
    lines: list[str] = []
    for file in files:
        text = file.read_text(encoding="utf-8")
        assert text == "" or text.endswith("\n"), f"{file} ends mid-line"
        lines.extend(text.splitlines())
    return lines


def file_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def request_ids(path: Path) -> list[str]:
    return [json.loads(line)["request_id"] for line in trail_lines(path)]


async def stream_lines(redis_url: str, stream: str) -> list[str]:
    """The ``record`` field of every entry of ``stream``, oldest first (XRANGE - +)."""
    client = aioredis.from_url(redis_url)
    try:
        entries: Any = await client.xrange(stream)
    finally:
        await client.aclose()
    return [fields[b"record"].decode() for _, fields in entries]
