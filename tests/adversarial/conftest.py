"""The attacks of issue 11, each reproduced against a real uvicorn on loopback (and a real
redis-server where the finding involves Redis), asserting the fixed outcome with a figure.

``served(app)`` runs an ASGI app under uvicorn in the test's own event loop, configured as a
deployment would be (uvicorn's defaults unless a test says otherwise), and yields its base URL.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from redis_servers import free_port


@asynccontextmanager
async def served(app: Any, **config: Any) -> AsyncIterator[str]:
    """``app`` under a real uvicorn on 127.0.0.1 (lifespan on); yields ``http://127.0.0.1:PORT``.
    ``config`` overrides uvicorn.Config's defaults (e.g. ``proxy_headers=False``)."""
    port = free_port()
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "on", **config}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if serving.done():
                    await serving  # raises what stopped it
                    raise AssertionError("uvicorn stopped before it started")
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


def rss_bytes() -> int:
    """This process's resident set size (the in-process server's memory)."""
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def token_budget(burst: int, default_max_tokens: int = 200, extra: str = "") -> str:
    """A policy with one per-key token budget of ``burst`` on the example server's three
    OpenAI routes (``examples/openai_server.py``), the path deciding each body's shape."""
    return f"""
version: 1
secret: env:GUARDRAIL_TEST_SECRET
identity:
  api_key: {{header: authorization}}
routes:
  - name: inference
    match: {{path: "/v1/(chat/completions|completions|responses)$", methods: [POST]}}
    inspect: openai
    default_max_tokens: {default_max_tokens}
    limits:
      - {{per: api_key, rate: 1000/day, burst: {burst}, cost: tokens}}
audit: {{sink: "stdout://", sample_allowed: 0.0}}
{extra}
"""
