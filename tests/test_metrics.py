"""Prometheus metrics (metrics.py): the exposition on metrics.path parsed with prometheus-client's
own parser after limits, challenges, storage failures of a real Redis, token budgets and audit
writes; who may read it; and the policy that turns it on."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount
from tests.actions.test_verify import CHALLENGES, VERIFY, answer, challenged

from examples.openai_server import FakeModel, build_app
from guardrail import Guardrail, Policy
from guardrail.actions import pow
from guardrail.cautions import cautions
from guardrail.errors import PolicyError
from guardrail.metrics import NO_METRICS, MetricsError, Prometheus
from test_budgets import KEY, PROMPT, PROMPT_USAGE
from test_budgets import chat as budget_chat
from test_budgets import policy as budget_policy
from test_middleware_risk import HEADERS
from test_middleware_risk import policy as risk_policy

from conftest import FakeClock
from helpers import audit_records, build, client, echo_app
from redis_servers import Server

METRICS = "metrics: {enabled: true}\n"

LIMITED = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
identity:
  client_ip: {trusted_proxies: [10.0.0.1]}
routes:
  - name: pages
    match: {path: /}
    limits:
      - {per: ip, rate: 60/minute, burst: 2}
audit: {sample_allowed: 1.0}
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(app: Any, peer: str = "127.0.0.1", path: str = "/metrics") -> Samples:
    """Every sample of the exposition, parsed by prometheus-client, keyed by name and labels."""
    async with client(app, peer) as http:
        response = await http.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_decisions_by_action_route_and_tier_and_the_audit_counts(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = build(tmp_path, clock, LIMITED + METRICS)
    async with client(app) as http:
        statuses = [(await http.get(f"/page/{n}")).status_code for n in range(5)]
    assert statuses == [200, 200, 429, 429, 429]
    await app.audit.flush()  # the writer's batch done: its counts are in
    samples = await scrape(app)
    decided = "guardrail_decisions_total"
    assert value(samples, decided, action="allow", route="pages", tier="") == 2
    # the 2nd and 3rd refusals of one subject are one held record; each is still a decision
    assert value(samples, decided, action="limit", route="pages", tier="") == 3
    written = value(samples, "guardrail_audit_records_written_total")
    assert written == len(audit_records(tmp_path)) == 3  # 2 allowed (sampled), 1 refusal
    assert value(samples, "guardrail_audit_records_dropped_total") == 0
    assert value(samples, "guardrail_audit_queue_depth") == 0
    assert value(samples, "guardrail_storage_breaker_open") == 0
    # the scrape itself is neither decided, limited nor recorded
    again = await scrape(app)
    assert value(again, decided, action="limit", route="pages", tier="") == 3
    await app.shutdown()
    assert len(audit_records(tmp_path)) == 4  # the held count of the refusals, at shutdown


async def test_dropped_audit_records_are_counted(tmp_path: Path, clock: FakeClock) -> None:
    app = build(tmp_path, clock, LIMITED + METRICS)
    await app.startup()
    await app.audit.close()  # records emitted after this are lost, and counted
    async with client(app) as http:
        assert (await http.get("/page")).status_code == 200
    samples = await scrape(app)
    assert value(samples, "guardrail_audit_records_dropped_total") == 1
    await app.shutdown()


async def test_challenges_issued_failed_passed_and_the_score_histogram(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = build(tmp_path, clock, risk_policy(4.0, extra=CHALLENGES + METRICS))
    async with client(app) as http:
        body = await challenged(http, clock)
        right = answer(body)
        seed = body["challenge"]["pow"]["seed"]
        wrong = next(str(n) for n in range(10**6) if not pow.verify(seed, str(n), 8))
        failed = await http.post(VERIFY, json={**right, "nonce": wrong}, headers=HEADERS)
        assert failed.status_code == 403
        assert (await http.post(VERIFY, json=right, headers=HEADERS)).status_code == 200
    samples = await scrape(app)
    challenges = "guardrail_challenges_total"
    assert value(samples, challenges, event="issued", kind="pow") == 1
    assert value(samples, challenges, event="failed", kind="pow") == 1
    assert value(samples, challenges, event="passed", kind="pow") == 1
    decided = "guardrail_decisions_total"
    assert value(samples, decided, action="challenge", route="inference", tier="") == 1
    assert value(samples, decided, action="challenge_failed", route="challenge", tier="") == 1
    assert value(samples, decided, action="challenge_passed", route="challenge", tier="") == 1
    # warm_up's 3 requests and the challenged one were scored; the last at 4 x 20 = 80
    assert value(samples, "guardrail_risk_score_count") == 4
    assert value(samples, "guardrail_risk_score_bucket", le="70.0") == 3
    assert value(samples, "guardrail_risk_score_bucket", le="80.0") == 4
    await app.shutdown()


async def test_storage_latency_then_errors_and_the_breaker_of_a_redis_shut_down(
    tmp_path: Path, clock: FakeClock
) -> None:
    redis = Server(tmp_path / "redis")
    try:
        app = build(tmp_path, clock, LIMITED + METRICS, storage=f"{redis.url}?timeout=0.5")
        async with client(app) as http:
            assert (await http.get("/page/1")).status_code == 200
            assert (await http.get("/page/2")).status_code == 200
            samples = await scrape(app)
            assert value(samples, "guardrail_storage_seconds_count", operation="charge") == 2
            assert value(samples, "guardrail_storage_seconds_sum", operation="charge") > 0
            redis.stop()
            # fail_open: the local fallback decides while Redis is gone
            statuses = [(await http.get(f"/page/{n}")).status_code for n in range(3, 8)]
            assert statuses == [200, 200, 429, 429, 429]
            samples = await scrape(app)
    finally:
        redis.stop()
    errors = "guardrail_storage_errors_total"
    assert value(samples, errors, reason="error") == 3  # storage_breaker.failures
    assert value(samples, errors, reason="breaker_open") == 2
    assert value(samples, "guardrail_storage_breaker_open") == 1
    assert value(samples, "guardrail_storage_seconds_count", operation="charge") == 2
    await app.shutdown()


async def test_tokens_reserved_and_settled_through_the_openai_sdk(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = Guardrail(
        build_app(FakeModel()),
        policy=Policy.from_string(budget_policy() + METRICS),
        clock=clock,
        sleep=clock.sleep,
        audit=f"file://{tmp_path / 'audit.jsonl'}",
    )
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 4000)))
    sdk = openai.AsyncOpenAI(
        api_key=KEY, base_url="http://testserver/v1", http_client=http, max_retries=0
    )
    await sdk.chat.completions.create(**budget_chat(max_tokens=50))
    await sdk.chat.completions.create(**budget_chat(max_tokens=30))
    await sdk.close()
    samples = await scrape(app)
    reserved = value(samples, "guardrail_tokens_reserved_total", route="inference")
    assert reserved == 2 * PROMPT + 50 + 30
    settled = value(samples, "guardrail_tokens_settled_total", route="inference")
    assert settled == 2 * PROMPT_USAGE + 50 + 30
    await app.shutdown()


@pytest.mark.parametrize(
    ("peer", "headers", "status"),
    [
        ("127.0.0.1", {}, 200),
        ("::1", {}, 200),
        ("203.0.113.7", {}, 403),
        ("10.1.2.3", {}, 403),  # a private network is not allowed unless listed
        ("10.0.0.1", {"x-forwarded-for": "203.0.113.9"}, 403),  # the client a proxy names
        ("10.0.0.1", {"x-forwarded-for": "127.0.0.1"}, 200),
    ],
)
async def test_who_may_read_the_path(
    tmp_path: Path, clock: FakeClock, peer: str, headers: dict[str, str], status: int
) -> None:
    app = build(tmp_path, clock, LIMITED + METRICS)
    async with client(app, peer) as http:
        response = await http.get("/metrics", headers=headers)
    assert response.status_code == status
    if status == 403:
        assert "allow_from" in response.json()["detail"]
        assert "guardrail_" not in response.text
    await app.shutdown()


async def test_allow_from_a_listed_network_get_only_and_a_path_of_its_own(
    tmp_path: Path, clock: FakeClock
) -> None:
    extra = "metrics: {enabled: true, path: /internal/prom, allow_from: [203.0.113.0/24]}\n"
    app = build(tmp_path, clock, LIMITED + extra)
    samples = await scrape(app, "203.0.113.7", "/internal/prom")
    assert ("guardrail_storage_breaker_open", ()) in samples
    async with client(app, "203.0.113.7") as http:
        posted = await http.post("/internal/prom")
        assert (posted.status_code, posted.headers["allow"]) == (405, "GET, HEAD")
        head = await http.head("/internal/prom")
        assert head.status_code == 200 and head.content == b""
        # /metrics is the app's again: a page of the route, limited like any other
        assert (await http.get("/metrics")).json()["action"] == "allow"
    await app.shutdown()


async def test_metrics_off_serve_nothing(tmp_path: Path, clock: FakeClock) -> None:
    app = build(tmp_path, clock, LIMITED)
    assert app.metrics is NO_METRICS
    async with client(app, "127.0.0.1") as http:
        response = await http.get("/metrics")
    assert response.json()["action"] == "allow"  # the app's page, not an exposition
    await app.shutdown()


def test_metrics_off_import_no_prometheus_client() -> None:
    """In a fresh interpreter: a guardrail with metrics off never imports the client."""
    code = textwrap.dedent(
        f"""
        import sys
        from guardrail import Guardrail, Policy
        app = Guardrail(lambda *a: None, policy=Policy.from_string({LIMITED!r}))
        assert "prometheus_client" not in sys.modules, "imported"
        """
    )
    env_path = f"{Path(__file__).parents[1] / 'src'}"
    run = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": env_path, "GUARDRAIL_TEST_SECRET": "s" * 32},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr


def test_metrics_on_without_prometheus_client_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails: not installed
    policy = Policy.from_string(LIMITED + METRICS)
    with pytest.raises(MetricsError, match=r"pip install 'guardrail\[metrics\]'"):
        Prometheus(policy.metrics)


async def test_registry_app_is_the_default_registry_the_app_exposes(
    tmp_path: Path, clock: FakeClock
) -> None:
    from prometheus_client import make_asgi_app

    app = Starlette(routes=[Mount("/metrics", make_asgi_app()), Mount("/", echo_app())])
    guarded = build(tmp_path, clock, LIMITED + "metrics: {enabled: true, registry: app}\n", app=app)
    before = await scrape(guarded, path="/metrics/")
    async with client(guarded) as http:
        assert (await http.get("/page")).status_code == 200
    after = await scrape(guarded, path="/metrics/")  # the app's endpoint, limited as a page
    decided = ("guardrail_decisions_total", (("action", "allow"), ("route", "pages"), ("tier", "")))
    # the app's scrapes are pages of the route too, each counted once answered: the first
    # scrape and the page (not the second scrape, whose text was made before it was counted)
    assert after[decided] - before.get(decided, 0.0) == 2
    assert guarded._metrics_path is None
    await guarded.shutdown()


def test_the_policy_section(tmp_path: Path) -> None:
    policy = Policy.from_string(LIMITED)
    assert (policy.metrics.enabled, policy.metrics.served_on) == (False, None)
    assert [str(n) for n in policy.metrics.allow_from] == ["127.0.0.0/8", "::1/128"]
    on = Policy.from_string(LIMITED + METRICS).metrics
    assert (on.served_on, on.registry) == ("/metrics", "guardrail")
    app_registry = Policy.from_string(LIMITED + "metrics: {enabled: true, registry: app}\n")
    assert app_registry.metrics.served_on is None
    with pytest.raises(PolicyError) as caught:
        Policy.from_string(LIMITED + "metrics: {enabled: true, registry: app, path: /m}\n")
    [issue] = caught.value.issues
    assert issue.path == "metrics.path" and "registry: app" in issue.expected


def test_a_metrics_path_open_to_a_public_network_is_cautioned() -> None:
    extra = "metrics: {enabled: true, allow_from: [10.0.0.0/8, 0.0.0.0/0]}\n"
    [caution] = cautions(Policy.from_string(LIMITED + extra))
    assert caution.path == "metrics.allow_from[1]" and "every route" in caution.expected
    assert cautions(Policy.from_string(LIMITED + METRICS)) == []


async def test_a_reload_keeps_the_counts_and_refuses_a_metrics_change(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = build(tmp_path, clock, LIMITED + METRICS)
    wider = tmp_path / "wider.yaml"
    wider.write_text(LIMITED.replace("burst: 2", "burst: 5") + METRICS)
    closed = tmp_path / "closed.yaml"
    closed.write_text(LIMITED + "metrics: {enabled: true, allow_from: [10.0.0.0/8]}\n")
    decided = "guardrail_decisions_total"
    async with client(app) as http:
        assert (await http.get("/page/1")).status_code == 200
        await app.reload(wider)
        assert (await http.get("/page/2")).status_code == 200
        samples = await scrape(app)
        assert value(samples, decided, action="allow", route="pages", tier="") == 2
        with pytest.raises(PolicyError) as refused:
            await app.reload(closed)
        [issue] = refused.value.issues
        assert issue.path == "metrics" and "restart" in issue.expected
        await scrape(app)  # still served to loopback: scrape asserts the 200
    await app.shutdown()
