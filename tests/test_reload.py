"""Live policy reload through the middleware (httpx.ASGITransport): a changed limit takes
effect, buckets and risk state are kept, a bad policy keeps the old one with every error
logged, a request in flight finishes on the policy it started on, and the triggers (reload(),
the file watched). A real SIGHUP to a real uvicorn under load: tests/deploy/test_reload_server.py.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from guardrail import Guardrail, GuardrailError, Policy, PolicyError
from guardrail.cli import main
from guardrail.recompile import REBUILT, SHARED
from test_middleware_risk import HEADERS, chat, warm_up
from test_middleware_risk import policy as risk_policy

from conftest import FakeClock
from helpers import CHAT, POLICY, audit_records, bearer, client, echo_app, lifespan

WIDER = POLICY.replace("burst: 3}", "burst: 5}")
NARROWER = POLICY.replace("burst: 3}", "burst: 1}")
# Another policy with the same limits: a sampled trail, and a comment
RESAMPLED = POLICY + "audit: {sample_allowed: 1.0}  # every request recorded\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def guard(
    tmp_path: Path,
    clock: FakeClock,
    text: str = POLICY,
    app: Any = None,
    storage: str | None = None,
) -> Guardrail:
    return Guardrail(
        app or echo_app(),
        policy=str(write(tmp_path / "policy.yaml", text)),
        clock=clock,
        sleep=clock.sleep,
        storage=storage,
        audit=f"file://{tmp_path / 'audit.jsonl'}",
    )


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> str | None:
    if request.param == "memory":
        return None
    return str(request.getfixturevalue("redis_url")) + "?timeout=5"


async def statuses(http: Any, key: str, n: int) -> list[int]:
    return [
        (await http.post("/v1/chat/completions", json=CHAT, headers=bearer(key))).status_code
        for _ in range(n)
    ]


async def test_a_limit_changed_by_reload_takes_effect(tmp_path: Path, clock: FakeClock) -> None:
    app = guard(tmp_path, clock)
    async with lifespan(app), client(app) as http:
        assert await statuses(http, "sk-a", 4) == [200, 200, 200, 429]  # burst 3
        write(tmp_path / "policy.yaml", NARROWER)
        reloaded = await app.reload()
        assert reloaded.digest == Policy.from_string(NARROWER).digest
        assert app.policy is reloaded  # what the app reads is the policy in force
        assert await statuses(http, "sk-b", 2) == [200, 429]  # burst 1, at once
        response = await http.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-c"))
        assert response.headers["x-ratelimit-limit-requests"] == "1"
    records = audit_records(tmp_path)
    reload = next(r for r in records if r["action"] == "policy_reload")
    assert reload["previous"] == Policy.from_string(POLICY).digest
    assert reload["policy"] == reloaded.digest
    assert reload["trigger"] == "call" and reload["source"] == str(tmp_path / "policy.yaml")
    after = records[records.index(reload) + 1 :]
    assert after and {r["policy"] for r in after} == {reloaded.digest}  # the new hash after it


async def test_buckets_keep_their_counts_across_a_reload(
    tmp_path: Path, clock: FakeClock, storage: str | None
) -> None:
    app = guard(tmp_path, clock, storage=storage)
    async with lifespan(app), client(app) as http:
        assert await statuses(http, "sk-a", 2) == [200, 200]  # one left of burst 3
        await app.reload(write(tmp_path / "policy.yaml", RESAMPLED))
        assert await statuses(http, "sk-a", 2) == [200, 429]  # still one left, not three
        await app.reload(write(tmp_path / "policy.yaml", WIDER))
        # burst 5 over the same bucket: its two more places, not a fresh five
        assert await statuses(http, "sk-a", 3) == [200, 200, 429]


async def test_risk_state_is_kept_and_the_new_weights_apply(
    tmp_path: Path, clock: FakeClock, storage: str | None
) -> None:
    app = guard(tmp_path, clock, risk_policy(3.0), storage=storage)
    async with lifespan(app), client(app) as http:
        await warm_up(http, clock)  # three prompts asking for reasoning: 3 x 20 x weight
        await app.reload(write(tmp_path / "policy.yaml", risk_policy(4.0)))
        response = await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
    assert response.status_code == 403  # 4 x 20 = 80: the evidence of the old policy's requests
    assert response.headers["guardrail-action"] == "challenge"
    # A guardrail without that evidence serves the same request under the same policy
    (tmp_path / "fresh").mkdir()
    fresh = guard(tmp_path / "fresh", clock, risk_policy(4.0))  # in memory: nothing shared
    async with lifespan(fresh), client(fresh) as http:
        alone = await http.post("/v1/chat/completions", json=chat(9), headers=HEADERS)
    assert alone.status_code == 200


BROKEN = POLICY.replace("rate: 10/minute", "rate: 10/fortnight").replace("burst: 5}", "burst: -1}")


async def test_a_bad_policy_keeps_the_old_one_and_logs_every_error(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    app = guard(tmp_path, clock)
    async with lifespan(app), client(app) as http:
        assert await statuses(http, "sk-a", 1) == [200]
        write(tmp_path / "policy.yaml", BROKEN)
        with caplog.at_level(logging.ERROR, "guardrail"), pytest.raises(PolicyError) as refused:
            await app.reload()
        assert await statuses(http, "sk-a", 3) == [200, 200, 429]  # burst 3 still
    assert len(refused.value.issues) == 2
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    for issue in refused.value.issues:  # every error, with its file, line, key and value
        assert str(issue) in logged
    assert Policy.from_string(POLICY).digest in logged  # and which policy stays
    records = audit_records(tmp_path)
    refusal = next(r for r in records if r["action"] == "policy_reload_refused")
    assert refusal["policy"] == Policy.from_string(POLICY).digest  # the one in force
    assert refusal["errors"] == [{"line": i.line, "key": i.path} for i in refused.value.issues]
    assert "fortnight" not in str(refusal)  # where, never the values
    assert not any(r["action"] == "policy_reload" for r in records)


async def test_what_only_a_restart_can_change_is_refused(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    app = guard(tmp_path, clock)
    moved = POLICY.replace(
        "secret: env:GUARDRAIL_TEST_SECRET",
        "secret: env:GUARDRAIL_TEST_SECRET\nstorage: redis://:hunter2@localhost:6379/0\n"
        "audit: {hash_chain: false}",
    )
    async with lifespan(app):
        with caplog.at_level(logging.ERROR, "guardrail"), pytest.raises(PolicyError) as refused:
            await app.reload(write(tmp_path / "policy.yaml", moved))
        assert app._view is app  # nothing swapped
    assert [(i.path, i.line) for i in refused.value.issues] == [
        ("storage", 4),
        ("audit.hash_chain", 5),
    ]
    assert "restart" in refused.value.issues[0].expected
    assert "hunter2" not in caplog.text  # the storage URI shown masked
    assert "***" in caplog.text


async def test_the_provenance_index_is_restart_only_its_hooks_reload(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index and its task are built once (turning provenance on, its path, retention...
    need a restart); the watermark seeds are rebuilt with the policy (a key may rotate)."""
    monkeypatch.setenv("GUARDRAIL_TEST_MARK", "watermark-key-0123456789abcdef")
    app = guard(tmp_path, clock)
    marked = POLICY + "provenance:\n  watermark: {key: env:GUARDRAIL_TEST_MARK}\n"
    captured = POLICY + "provenance:\n  enabled: true\n"
    async with lifespan(app):
        assert app._view.seeds is None
        await app.reload(write(tmp_path / "policy.yaml", marked))
        assert app._view.seeds is not None
        with pytest.raises(PolicyError) as refused:
            await app.reload(write(tmp_path / "policy.yaml", captured))
        assert app._view.seeds is not None  # the policy in force kept
    assert [i.path for i in refused.value.issues] == ["provenance.enabled"]


async def test_a_secret_rewritten_under_the_same_name_is_refused(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = guard(tmp_path, clock)
    async with lifespan(app):
        monkeypatch.setenv("GUARDRAIL_TEST_SECRET", "another-secret-0123456789")
        with pytest.raises(PolicyError) as refused:
            await app.reload(write(tmp_path / "policy.yaml", WIDER))
    assert [i.path for i in refused.value.issues] == ["secret"]
    assert "another" not in str(refused.value)


async def test_a_request_in_flight_finishes_on_the_policy_it_started_on(
    tmp_path: Path, clock: FakeClock
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: Request) -> Response:
        entered.set()
        await release.wait()
        return PlainTextResponse(request.state.guardrail.route)

    sampled = "audit: {sample_allowed: 1.0}\n"
    first = POLICY.replace("name: default", "name: pages-a") + sampled
    second = POLICY.replace("name: default", "name: pages-b") + sampled
    app = guard(tmp_path, clock, first, Starlette(routes=[Route("/slow", slow)]))
    async with lifespan(app), client(app) as http:
        in_flight = asyncio.ensure_future(http.get("/slow"))
        await entered.wait()
        await app.reload(write(tmp_path / "policy.yaml", second))
        entered.clear()
        release.set()
        assert (await in_flight).text == "pages-a"
        assert (await http.get("/slow")).text == "pages-b"
    decided = [(r["route"], r["policy"]) for r in audit_records(tmp_path) if r["route"]]
    a, b = Policy.from_string(first).digest, Policy.from_string(second).digest
    assert decided == [("pages-a", a), ("pages-b", b)]  # recorded after the swap, on its own


async def test_concurrent_requests_across_reloads_each_see_one_policy(
    tmp_path: Path, clock: FakeClock
) -> None:
    async def page(request: Request) -> Response:
        for _ in range(3):
            await asyncio.sleep(0)  # the app yields: reloads land while requests run
        return PlainTextResponse("ok")

    texts = [
        POLICY.replace("name: default", f"name: pages-{n}").replace("burst: 2}", "burst: 900}")
        + "audit: {sample_allowed: 1.0}\n"
        for n in "ab"
    ]
    digests = {Policy.from_string(t).digest: f"pages-{n}" for t, n in zip(texts, "ab", strict=True)}
    app = guard(tmp_path, clock, texts[0], Starlette(routes=[Route("/{p:path}", page)]))
    first = asyncio.Event()
    async with lifespan(app), client(app) as http:

        async def load() -> list[int]:
            # half before the first reload has landed, half after: the reloads (in a thread)
            # and the requests overlap however fast either side is
            statuses = [(await http.get(f"/p{i}")).status_code for i in range(20)]
            await first.wait()
            return statuses + [(await http.get(f"/q{i}")).status_code for i in range(20)]

        async def reloads() -> None:
            try:
                for n in range(10):
                    await app.reload(write(tmp_path / "policy.yaml", texts[(n + 1) % 2]))
                    first.set()
            finally:
                first.set()

        results = await asyncio.gather(*(load() for _ in range(4)), reloads())
    served = [status for statuses_ in results[:4] if statuses_ for status in statuses_]
    assert served == [200] * 160
    records = audit_records(tmp_path)
    decided = [r for r in records if r["action"] == "allow"]
    assert len(decided) == 160
    assert all(digests[r["policy"]] == r["route"] for r in decided)  # never half of each
    assert {r["route"] for r in decided} == {"pages-a", "pages-b"}
    assert len([r for r in records if r["action"] == "policy_reload"]) == 10


async def test_an_unchanged_file_reloads_nothing(tmp_path: Path, clock: FakeClock) -> None:
    app = guard(tmp_path, clock)
    async with lifespan(app):
        view = app._view
        assert (await app.reload()).digest == Policy.from_string(POLICY).digest
        assert app._view is view
    assert not [r for r in audit_records(tmp_path) if r["action"].startswith("policy_reload")]


async def test_reload_before_startup_and_without_a_file_is_refused(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = guard(tmp_path, clock)
    with pytest.raises(GuardrailError, match="not started"):
        await app.reload()
    from_text = Guardrail(echo_app(), policy=Policy.from_string(POLICY), clock=clock)
    async with lifespan(from_text):
        with pytest.raises(GuardrailError, match="not read from a file"):
            await from_text.reload()
        # a Policy passed in needs no file
        assert (await from_text.reload(Policy.from_string(WIDER))).digest == (
            Policy.from_string(WIDER).digest
        )


async def test_the_watched_file_reloads_when_rewritten(tmp_path: Path, clock: FakeClock) -> None:
    watched = POLICY + "reload: {watch: true}\n"
    app = guard(tmp_path, clock, watched)
    wider = WIDER + "reload: {watch: true}\n"
    async with lifespan(app), client(app) as http:
        await asyncio.sleep(0.2)  # the watcher's thread starting (real time: a real file watch)
        staging = write(tmp_path / "policy.yaml.new", wider)
        staging.replace(tmp_path / "policy.yaml")  # written as editors and deploy tools do
        deadline = time.monotonic() + 10
        while app._view.policy.digest != Policy.from_string(wider).digest:
            assert time.monotonic() < deadline, "the rewritten policy was not reloaded"
            await asyncio.sleep(0.05)
        assert await statuses(http, "sk-a", 6) == [200] * 5 + [429]
    reloads = [r for r in audit_records(tmp_path) if r["action"] == "policy_reload"]
    assert [r["trigger"] for r in reloads] == ["watch"]


async def test_the_watch_stops_when_a_reload_turns_it_off(tmp_path: Path, clock: FakeClock) -> None:
    app = guard(tmp_path, clock, POLICY + "reload: {watch: true}\n")
    async with lifespan(app):
        assert app._reloader._watcher is not None
        await app.reload(write(tmp_path / "policy.yaml", WIDER))
        assert app._reloader._watcher is None
        await app.reload(write(tmp_path / "policy.yaml", POLICY + "reload: {watch: true}\n"))
        assert app._reloader._watcher is not None
    assert app._reloader._watcher is None  # and at shutdown


async def test_the_watch_follows_the_file_reload_was_given(
    tmp_path: Path, clock: FakeClock
) -> None:
    watched = POLICY + "reload: {watch: true}\n"
    app = guard(tmp_path, clock, watched)
    async with lifespan(app):
        first = app._reloader._watcher
        other = write(tmp_path / "other.yaml", WIDER + "reload: {watch: true}\n")
        await app.reload(other)
        assert app._reloader._watcher is not first and app._reloader._watched == str(other)
        assert first is not None and first.done()


def test_every_attribute_is_shared_or_rebuilt_by_a_reload(tmp_path: Path, clock: FakeClock) -> None:
    app = guard(tmp_path, clock, risk_policy(3.0))
    # A new attribute of Guardrail must be classified in recompile.py, or a reload would keep
    # the first policy's value in it
    assert set(vars(app)) == SHARED | REBUILT
    assert not SHARED & REBUILT


async def test_a_view_shares_the_state_and_rebuilds_the_rest(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = guard(tmp_path, clock, risk_policy(3.0))
    async with lifespan(app):
        await app.reload(write(tmp_path / "policy.yaml", risk_policy(4.0)))
        view = app._view
        assert view is not app
        for name in SHARED:
            assert getattr(view, name) is getattr(app, name), name
        assert app._view is view._view is view
        for name in REBUILT - {
            "_view",
            "enforce",
            "_refuse_unmatched",
            "sample_allowed",
            "siteverify",
            "widget",
            "_provenance",  # none of these in this policy: None or empty either side
            "seeds",
            "signer",
        }:
            assert getattr(view, name) is not getattr(app, name), name
        assert view.risk is not None and app.risk is not None
        assert view.risk.store is app.risk.store  # the risk state itself
        assert view.desk.g is view


async def test_the_cli_reads_a_trail_with_reloads(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    app = guard(tmp_path, clock)
    async with lifespan(app), client(app) as http:
        await statuses(http, "sk-a", 4)
        await app.reload(write(tmp_path / "policy.yaml", WIDER))
        write(tmp_path / "policy.yaml", BROKEN)
        with pytest.raises(PolicyError):
            await app.reload()
    trail = str(tmp_path / "audit.jsonl")
    assert main(["audit", "verify", trail]) == 0  # one chain through the reloads
    capsys.readouterr()
    assert main(["audit", "tail", trail]) == 0
    lines = capsys.readouterr().out.splitlines()
    new, old = Policy.from_string(WIDER).digest, Policy.from_string(POLICY).digest
    assert f"policy_reload      -  {new[:19]}… in force, was {old[:19]}… (call: " in lines[-2]
    assert "policy_reload_refused   -  refused (call: " in lines[-1]
    assert f"{new[:19]}… stays in force; errors: line 18 routes[1].limits[0].rate" in lines[-1]
    assert main(["audit", "summary", trail]) == 0
    assert "(1 decisions; 2 events: policy_reload 1, policy_reload_refused 1)" in (
        capsys.readouterr().out
    )


def test_sighup_off_the_main_thread_is_said_and_left_alone(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Signals reach only the main thread: a server running its loop in another (a test
    # client's portal) gets a warning, and reload() and the watch still work there.
    app = guard(tmp_path, clock, POLICY + "reload: {sighup: true}\n")

    async def serve() -> None:
        async with lifespan(app):
            assert (await app.reload(write(tmp_path / "policy.yaml", WIDER))).digest == (
                Policy.from_string(WIDER).digest
            )

    with caplog.at_level(logging.WARNING, "guardrail"):
        thread = threading.Thread(target=asyncio.run, args=(serve(),))
        thread.start()
        thread.join()
    assert "signals reach only the main thread's event loop" in caplog.text
    assert len([r for r in audit_records(tmp_path) if r["action"] == "policy_reload"]) == 1
