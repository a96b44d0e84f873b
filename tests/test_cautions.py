"""Settings that load but leave a way around guardrail: which ones ``cautions`` names, where."""

from __future__ import annotations

import textwrap

import pytest

from guardrail.cautions import cautions
from guardrail.policy import Policy

HEAD = """\
version: 1
secret: env:GUARDRAIL_TEST_SECRET
challenges:
  order: [{name}, pow]
"""


def captcha(name: str, sitekey: str, more: str = "") -> str:
    block = f"  {name}:\n    sitekey: {sitekey}\n    secret: env:GUARDRAIL_TEST_SECRET\n"
    return HEAD.format(name=name) + block + textwrap.indent(more, "    ")


def cautioned(text: str) -> dict[str, tuple[int | None, object, str]]:
    return {c.path: (c.line, c.value, c.expected) for c in cautions(Policy.from_string(text))}


@pytest.mark.parametrize("name", ["hcaptcha", "turnstile"])
def test_a_captcha_without_hostnames_relies_on_the_host_header(name: str) -> None:
    found = cautioned(captcha(name, "20000000-ffff-ffff-ffff-000000000002"))
    line, value, advice = found[f"challenges.{name}.hostnames"]
    assert line == 5 and value == []  # the captcha's block: where the key would go
    assert "Host header" in advice and "domain list at the provider" in advice


@pytest.mark.parametrize("name", ["hcaptcha", "turnstile"])
def test_configured_hostnames_leave_nothing_to_say(name: str) -> None:
    text = captcha(name, "20000000-ffff-ffff-ffff-000000000002", "hostnames: [api.example.com]\n")
    assert cautioned(text) == {}


@pytest.mark.parametrize(
    ("name", "sitekey"),
    [
        ("hcaptcha", "10000000-ffff-ffff-ffff-000000000001"),
        ("turnstile", "1x00000000000000000000AA"),
    ],
)
def test_a_published_test_sitekey_passes_a_dummy_token(name: str, sitekey: str) -> None:
    found = cautioned(captcha(name, sitekey))
    line, value, advice = found[f"challenges.{name}.sitekey"]
    assert line == 6 and value == sitekey and "dummy token" in advice
    assert f"challenges.{name}.hostnames" not in found  # a test key reports no real host


def test_no_verify_limits_is_unlimited_and_the_default_is_quiet() -> None:
    assert cautioned("version: 1\nsecret: env:GUARDRAIL_TEST_SECRET\n") == {}
    text = "version: 1\nsecret: env:GUARDRAIL_TEST_SECRET\nchallenges:\n  verify_limits: []\n"
    line, value, advice = cautioned(text)["challenges.verify_limits"]
    assert line == 4 and value == [] and "siteverify call" in advice


LLM_ROUTE = """\
version: 1
routes:
  - name: chat
    match: {path: "^/v1/chat/completions$", methods: [POST]}
    inspect: openai
"""


def test_an_llm_policy_that_passes_unmatched_paths_is_cautioned() -> None:
    line, value, advice = cautioned(LLM_ROUTE)["unmatched"]
    assert value == "pass" and line is None  # the key is not written: where it would go
    assert "/engines/{model}/chat/completions" in advice and "guardrail routes" in advice


@pytest.mark.parametrize(
    "more",
    [
        "unmatched: chat\n",
        "unmatched: refuse\n",
        "  - name: rest\n    match: {path: /}\n",  # a catch-all decides the rest
    ],
)
def test_a_default_route_refuse_or_catch_all_leaves_nothing_to_say(more: str) -> None:
    assert "unmatched" not in cautioned(LLM_ROUTE + more)


def test_a_policy_that_reads_no_bodies_is_not_cautioned() -> None:
    text = "version: 1\nroutes:\n  - name: api\n    match: {path: ^/v1/}\n"
    assert "unmatched" not in cautioned(text)


def test_a_default_route_with_token_budgets_is_cautioned() -> None:
    text = LLM_ROUTE + "    limits: [{per: ip, rate: 1000/hour, cost: tokens}]\nunmatched: chat\n"
    line, value, advice = cautioned(text)["unmatched"]
    assert value == "chat" and line == 7
    assert "default_max_tokens" in advice


BUDGET = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
routes:
  - name: inference
    match: {{path: /v1/}}
    inspect: openai
    default_max_tokens: {default}
    limits:
      - {{per: api_key, rate: 2000/minute, cost: tokens}}
unmatched: refuse
{more}"""


def test_a_default_output_larger_than_the_budget_is_refused_for_good() -> None:
    """A request that names no max_tokens reserves default_max_tokens: more than the budget
    ever holds is a 429 that no wait cures, every time."""
    assert cautioned(BUDGET.format(default=2000, more="")) == {}
    line, value, advice = cautioned(BUDGET.format(default=4096, more=""))[
        "routes[0].default_max_tokens"
    ]
    assert line == 8 and value == 4096
    assert "at most 2000" in advice and "refused every time" in advice


def test_a_tier_budget_smaller_than_the_output_it_allows_is_refused_for_good() -> None:
    tier = (
        "thresholds: [{score: 50, action: throttle, tier: slow}]\n"
        "tiers:\n  slow:\n    limits: [{per: api_key, rate: 100/minute, cost: tokens}]\n"
    )
    found = cautioned(BUDGET.format(default=1000, more=tier))
    line, value, advice = found["tiers.slow.limits[0]"]
    assert line == 15 and value == "100/minute" and "at least 1000 tokens" in advice
    capped = tier.replace("    limits:", "    max_tokens: 64\n    limits:")
    assert cautioned(BUDGET.format(default=1000, more=capped)) == {}  # 64 fits 100
