"""``guardrail audit report``: the counts behind the page, and the page itself in headless
Chromium with the network closed, over a trail the simulator wrote and one an attacker filled."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions.test_browser import CHROMIUM_ARGS, chromium_path
from guardrail.audit import html, report
from guardrail.audit.sinks import sink_from_uri
from guardrail.audit.writer import AuditLog
from guardrail.cli import main
from guardrail.simulate.populations import EPOCH

from audit_helpers import T0, make_record

REPO = Path(__file__).resolve().parents[2]

#: What an attacker can put in a trail: its account header, a signal-shaped string is not
#: theirs to choose but a hostile trail file could hold one, and the path it asked for.
HOSTILE_ACCOUNT = "<script>window.__pwned = 1</script>"
HOSTILE_SIGNAL = '"><img src=x onerror="window.__pwned = 2">'
HOSTILE_CLIENT = "f:<u>underlined</u>"


def write_trail(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def hostile(i: int, **overrides: Any) -> dict[str, Any]:
    return make_record(
        i,
        subject={"account": HOSTILE_ACCOUNT, "ip": "198.51.100.9", "subnet": "198.51.100.0/24"},
        action="block",
        status=403,
        score=91.0,
        signals={HOSTILE_SIGNAL: 30.0, "timing_regularity": 15.0},
        client=HOSTILE_CLIENT,
        **overrides,
    )


def test_counts_decisions_by_time_score_subject_network_build_and_spend(tmp_path: Path) -> None:
    records = [
        make_record(
            0,
            subject={"account": "acct-a", "ip": "192.0.2.1", "subnet": "192.0.2.0/24"},
            client="f:1",
            tokens={"reserved": 300, "used": 120},
            score=42.0,
        ),
        make_record(
            60,
            subject={"account": "acct-b", "ip": "192.0.2.2", "subnet": "192.0.2.0/24"},
            client="f:1",
            action="challenge",
            status=403,
            score=77.0,
        ),
        # one record standing for 40 refusals: counted 40 times
        make_record(
            3600,
            subject={"account": "acct-a", "ip": "192.0.2.1", "subnet": "192.0.2.0/24"},
            client="f:1",
            repeated=40,
            tokens={"reserved": 300, "used": None},
            score=100.0,
        ),
        make_record(
            7200,
            subject={"api_key": "k:ff", "ip": "203.0.113.5", "subnet": "203.0.113.0/24"},
            action="throttle",
            status=200,
            tokens={"reserved": 50, "used": 50},
            score=55.5,
        ),
        {"ts": "not a time", "action": "limit"},
    ]
    trail = write_trail(tmp_path / "audit.jsonl", records)
    with trail.open("a") as handle:
        handle.write("not json\n")

    data = report.build([trail], now=T0 + 8000)

    assert (data.records, data.decisions, data.malformed) == (5, 44, 1)
    assert data.by_action == {"limit": 42, "challenge": 1, "throttle": 1}
    assert data.step == 300  # 2 hours in 5-minute bars: 25 bars, under MAX_BUCKETS
    assert sum(sum(c.values()) for c in data.timeline.values()) == 43  # the undated one aside
    assert data.timeline[int((T0 + 3600) // 300 * 300)] == {"limit": 40}
    assert data.scores[8] == {"limit": 1} and data.scores[15] == {"challenge": 1}
    assert data.scores[19] == {"limit": 40} and data.scores[11] == {"throttle": 1}
    top = data.subjects[0]
    assert (top.name, top.kind, top.decisions, top.max_score) == ("acct-a", "account", 41, 100.0)
    assert top.top_signals(1) == [("timing_regularity", 10.0)]  # mean points per record
    assert [(s.name, s.kind) for s in data.subjects[1:]] == [
        ("acct-b", "account"),
        ("k:ff", "api_key"),
    ]
    network = data.networks[0]
    assert (network.name, network.accounts, network.decisions) == (
        "192.0.2.0/24",
        {"acct-a", "acct-b"},
        42,
    )
    assert data.clients[0].name == "f:1" and data.clients[0].accounts == {"acct-a", "acct-b"}
    assert [(s.name, s.tokens_used, s.tokens_reserved) for s in data.spenders] == [
        ("acct-a", 120, 600),
        ("k:ff", 50, 50),
    ]

    recent = report.build([trail], since_seconds=1000, now=T0 + 8000)
    assert (recent.decisions, recent.since) == (1, "2026-11-28T15:56:40.000Z")


def test_every_value_from_the_trail_is_escaped(tmp_path: Path) -> None:
    trail = write_trail(tmp_path / "audit.jsonl", [hostile(i) for i in range(3)])
    page = html.render(report.build([trail]))
    for text in (HOSTILE_ACCOUNT, HOSTILE_SIGNAL, HOSTILE_CLIENT, "<img", "<u>"):
        assert text not in page
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=&quot;window.__pwned = 2&quot;&gt;" in page
    assert "<script" not in page  # the page has no script of its own either


def test_an_empty_window_still_renders(tmp_path: Path) -> None:
    trail = write_trail(tmp_path / "audit.jsonl", [make_record(0)])
    data = report.build([trail], since_seconds=60, now=T0 + 3600)
    page = html.render(data)
    assert data.decisions == 0
    assert "No dated records." in page and "No subjects." in page


@pytest.mark.redis
async def test_a_redis_stream_and_a_file_make_one_report(redis_url: str, tmp_path: Path) -> None:
    uri = f"{redis_url}?stream=report"
    log = AuditLog(sink_from_uri(uri))
    await log.start()
    for n in range(3):
        log.emit(make_record(n, subject={"account": "acct-s", "subnet": "192.0.2.0/24"}))
    await log.close()
    trail = write_trail(tmp_path / "audit.jsonl", [hostile(0, repeated=5)])
    data = await asyncio.to_thread(report.build, [uri, trail], None, T0 + 100)
    assert data.files == [uri, str(trail)]
    assert [(s.name, s.decisions) for s in data.subjects] == [(HOSTILE_ACCOUNT, 5), ("acct-s", 3)]
    out = tmp_path / "report.html"
    assert await asyncio.to_thread(main, ["audit", "report", uri, "--html", str(out)]) == 0
    assert "acct-s" in out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Half a simulated day of the example deployment: campaigns and honest accounts."""
    trail = tmp_path_factory.mktemp("simulated") / "audit.jsonl"
    argv = [
        "simulate",
        "--policy",
        str(REPO / "examples" / "policy.yaml"),
        "--json",
        "--scale",
        "0.03",
        "--days",
        "0.5",
        "--audit",
        str(trail),
    ]
    assert main(argv) == 0
    yield trail


def test_simulate_keeps_its_trail_where_audit_says(
    simulated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = simulated.read_text(encoding="utf-8").splitlines()
    assert len(lines) > 100
    assert any(json.loads(line).get("client", "").startswith("f:") for line in lines)
    capsys.readouterr()
    argv = [
        "simulate",
        "--policy",
        str(REPO / "examples" / "policy.yaml"),
        "--json",
        "--days",
        "0.01",
        "--audit",
        str(simulated),
    ]
    assert main(argv) == 2  # a second run does not append to the first
    assert "exists; name a new file" in capsys.readouterr().err


async def test_the_page_in_chromium_offline(
    simulated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    executable = chromium_path()
    from playwright.async_api import Route, async_playwright

    attacked = write_trail(
        tmp_path / "attacked.jsonl",
        [hostile(i, repeated=30, at=EPOCH + 3 * 3600 + i) for i in range(2)],
    )
    out = tmp_path / "report.html"
    assert main(["audit", "report", str(simulated), str(attacked), "--html", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"{out}: ")
    data = report.build([simulated, attacked])
    top = data.subjects[0].name
    assert top != HOSTILE_ACCOUNT and HOSTILE_ACCOUNT in [s.name for s in data.subjects]

    requested: list[str] = []

    async def offline(route: Route) -> None:
        url = route.request.url
        if url.startswith(("file://", "data:")):
            await route.continue_()
        else:
            requested.append(url)
            await route.abort()

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1100, "height": 1400})
            await context.route("**/*", offline)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(out.as_uri())

            headings = await page.locator("h2").all_inner_texts()
            for heading in (
                "Decisions over time, by action",
                "Risk score distribution, by action",
                "Subjects refused most, and why",
                "Networks carrying the most accounts",
                "Client builds carrying the most accounts",
                "Token spend by subject",
            ):
                assert heading in headings
            charts = page.locator("svg.chart")
            assert await charts.count() == 2
            for index in range(2):
                chart = charts.nth(index)
                assert await chart.locator("title").first.text_content() in headings
                assert await chart.locator("rect").count() >= 10  # bars drawn
                assert await chart.locator("text.axis-title").count() == 2  # both axes named
            legend = await page.locator("ul.legend li").all_inner_texts()
            assert {"throttle", "challenge", "block"} <= set(legend)
            first_row = page.locator("section:has(h2:text('Subjects refused most')) tbody tr")
            assert await first_row.first.locator("td").first.inner_text() == (f"{top}account")
            spend = page.locator("section:has(h2:text('Token spend')) tbody tr")
            assert await spend.count() >= 3

            # The attacker's strings are text on the page, and nothing they held ran or loaded.
            assert await page.get_by_text(HOSTILE_ACCOUNT, exact=True).count() >= 1
            assert await page.get_by_text(HOSTILE_SIGNAL, exact=True).count() >= 1
            assert await page.locator("script, img, u").count() == 0
            assert await page.evaluate("window.__pwned") is None
            assert requested == [] and errors == []

            shot = tmp_path / "audit-report.png"
            await page.screenshot(path=shot, clip={"x": 0, "y": 0, "width": 1100, "height": 1400})
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        finally:
            await browser.close()
