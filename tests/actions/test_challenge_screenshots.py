"""The challenge page in headless Chromium on a real uvicorn: with JavaScript, the worker's
progress and no manual form; without, the manual form an engineer fills in, and it passes.

Each test takes a screenshot; with ``GUARDRAIL_SCREENSHOTS=DIR`` set they are also written to
DIR (``GUARDRAIL_SCREENSHOTS=docs`` refreshes the README's ``docs/challenge-page*.png``)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import shlex
import shutil
import sys
from pathlib import Path

import httpx

from guardrail.actions import challenge
from test_middleware_risk import HEADERS, chat, policy

from .test_browser import CHROMIUM_ARGS, chromium_path, serving
from .test_verify import CHALLENGES
from conftest import FakeClock
from helpers import build

#: The worker is photographed with at least this many tries behind it, of 2^20 expected...
TRIED = 400_000
#: ...and has no answer below this many (about 4 challenge ids in 10 qualify).
UNSOLVED = 1_000_000


def keep(shot: Path) -> None:
    where = os.environ.get("GUARDRAIL_SCREENSHOTS")
    if where:
        shutil.copy(shot, Path(where) / shot.name)


def unsolved_below(seed: str, tries: int, difficulty: int) -> bool:
    """No nonce under ``tries`` answers: a worker that has tried fewer is still working."""
    prefix = hashlib.sha256(f"{seed}:".encode())
    limit = 1 << (256 - difficulty)
    for nonce in range(tries):
        digest = prefix.copy()
        digest.update(str(nonce).encode())
        if int.from_bytes(digest.digest(), "big") < limit:
            return False
    return True


async def test_the_page_shows_the_workers_progress(tmp_path: Path, clock: FakeClock) -> None:
    executable = chromium_path()
    from playwright.async_api import async_playwright

    extra = "challenges:\n  site_name: Example Models API\n  pow: {difficulty: 20}\n"
    app = build(tmp_path, clock, policy(4.0, extra=extra))
    config = app.policy.challenges
    # A challenge whose first answer lies beyond UNSOLVED tries, so the screenshot below is
    # mid-progress whatever the machine's speed, never a finished page.
    # (The page is served from the id alone: GET {prefix}/challenge/{id}.)
    challenge_id = next(
        cid
        for cid in (f"screenshot{i}" for i in itertools.count())
        if unsolved_below(challenge.of(config, app.secret, cid, 0.0).seed, UNSOLVED, 20)
    )
    async with serving(app) as base, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 820, "height": 640})
        response = await page.goto(f"{base}/.guardrail/challenge/{challenge_id}")
        assert response is not None and response.status == 200
        await page.wait_for_function(
            "(tried) => document.getElementById('guardrail-bar').value >= tried",
            arg=TRIED / 2**20,
            timeout=60_000,
        )
        assert await page.locator("#guardrail-progress").is_visible()
        assert await page.locator("#guardrail-nonce").count() == 0  # in <noscript>: not parsed
        count = await page.locator("#guardrail-count").inner_text()
        assert count.startswith("Tried ") and "of about 1,048,576 expected" in count
        status = await page.locator("#guardrail-status").inner_text()
        assert status.startswith("Working on it")
        assert await page.title() == "Checking your connection to Example Models API"
        shot = tmp_path / "challenge-page.png"
        await page.screenshot(path=str(shot), full_page=True)
        await browser.close()
    await app.shutdown()
    keep(shot)


async def test_without_javascript_an_engineer_answers_by_hand(
    tmp_path: Path, clock: FakeClock
) -> None:
    executable = chromium_path()
    from playwright.async_api import async_playwright

    app = build(tmp_path, clock, policy(4.0, extra=CHALLENGES))
    async with serving(app) as base:
        async with httpx.AsyncClient(base_url=base) as http:  # into the challenge band
            statuses = []
            for i in range(4):
                response = await http.post("/v1/chat/completions", json=chat(i), headers=HEADERS)
                statuses.append(response.status_code)
                clock.advance(30)
            assert statuses == [200, 200, 200, 403]
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=executable, args=CHROMIUM_ARGS
            )
            context = await browser.new_context(
                java_script_enabled=False,
                extra_http_headers=HEADERS,
                viewport={"width": 820, "height": 640},
            )
            page = await context.new_page()
            url = f"{base}/account?tab=keys"
            first = await page.goto(url)
            assert first is not None and first.status == 403
            assert not await page.locator("#guardrail-progress").is_visible()
            assert await page.locator("#guardrail-nonce").is_visible()
            assert "127.0.0.1 saw unusual traffic" in await page.locator("main").inner_text()
            shot = tmp_path / "challenge-page-nojs.png"
            await page.screenshot(path=str(shot), full_page=True)
            # what the page tells the engineer to run, run here
            command = shlex.split(await page.locator("noscript pre, section pre").inner_text())
            assert command[:2] == ["python3", "-c"]
            solver = await asyncio.create_subprocess_exec(
                sys.executable, *command[1:], stdout=asyncio.subprocess.PIPE
            )
            out, _ = await solver.communicate()
            nonce = out.decode().strip()
            assert nonce.isdigit()
            await page.fill("#guardrail-nonce", str(nonce))
            async with page.expect_response(lambda r: r.url == url and r.status == 200):
                await page.click("noscript button, section button")
            assert page.url == url
            await browser.close()
    await app.shutdown()
    keep(shot)
