"""The challenge a person passes: headless Chromium on a real uvicorn over loopback. The page's
worker solves the proof of work, the browser goes back to the page it asked for, and its next
requests pass on the clearance cookie."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from test_middleware_risk import HEADERS, chat, policy

from .test_verify import CHALLENGES
from conftest import FakeClock
from helpers import build
from redis_servers import free_port

#: What Chromium needs on a machine without a desktop or an open network (no background
#: connections, which a closed network refuses many at a time).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("GUARDRAIL_REQUIRE_BROWSER"):
            pytest.fail("chromium is required (make test installs it) and was not found")
        pytest.skip("chromium is not installed (make test installs it)")
    return path


@asynccontextmanager
async def serving(app: object) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")  # type: ignore[arg-type]
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 (uvicorn exposes no startup event)
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_a_person_passes_the_proof_of_work_in_chromium(
    tmp_path: Path, clock: FakeClock
) -> None:
    executable = chromium_path()
    from playwright.async_api import async_playwright

    app = build(tmp_path, clock, policy(4.0, extra=CHALLENGES))
    async with serving(app) as base:
        async with httpx.AsyncClient(base_url=base) as http:  # the account's API traffic
            statuses = []
            for i in range(4):  # four prompts asking for reasoning: the challenge band
                response = await http.post("/v1/chat/completions", json=chat(i), headers=HEADERS)
                statuses.append(response.status_code)
                clock.advance(30)
            assert statuses == [200, 200, 200, 403]
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=executable, args=CHROMIUM_ARGS
            )
            context = await browser.new_context(extra_http_headers=HEADERS)
            page = await context.new_page()
            url = f"{base}/account?tab=keys"
            async with (
                page.expect_response(
                    lambda r: r.url.endswith("/.guardrail/verify"), timeout=30_000
                ) as verified,
                page.expect_response(lambda r: r.url == url and r.status == 200) as back,
            ):
                first = await page.goto(url)
                assert first is not None and first.status == 403
                # (its body is gone once the page's script has moved on: headers only)
                assert first.headers["guardrail-action"] == "challenge"
            # the worker solved, the form posted, the 303 brought the browser back
            assert (await verified.value).status == 303
            page_body = await (await back.value).json()
            assert page_body["action"] == "allow"  # served on the clearance
            await page.wait_for_load_state()
            assert page.url == url
            cookies = {c["name"]: c for c in await context.cookies()}
            assert cookies["guardrail_clearance"]["httpOnly"]
            again = await page.goto(f"{base}/account")  # the next request passes on the cookie
            assert again is not None and again.status == 200
            await browser.close()
    await app.shutdown()
