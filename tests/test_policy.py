"""The policy file: good/ files must load, bad/ files must fail naming the key and the line."""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
import time
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import pytest
from pydantic import ValidationError

from guardrail.errors import PolicyError, PolicyIssue
from guardrail.policy import Policy, Rate, check_files, parse_duration

POLICIES = Path(__file__).parent / "policies"
GOOD = sorted((POLICIES / "good").glob("*.yaml"))

# bad file -> (key path, line) pairs that must be among its issues; line None = whole document
BAD: dict[str, list[tuple[str, int | None]]] = {
    "bad_rate.yaml": [("routes[0].limits[0].rate", 7)],
    "bad_duration.yaml": [("risk.half_life", 4)],
    "bad_share_every.yaml": [("risk.share_every", 6)],
    "bad_audit_aggregate.yaml": [("audit.aggregate", 5)],
    "unknown_key.yaml": [("routes[0].limts", 6)],
    "wrong_mode.yaml": [("mode", 3)],
    "duplicate_key.yaml": [("storage", 5)],
    "yaml_syntax.yaml": [("", 6)],
    "literal_secret_enforce.yaml": [("secret", 4)],
    "chain_key_literal_enforce.yaml": [("audit.chain_key", 6)],
    "chain_key_secret_without_secret.yaml": [("audit.chain_key", 5)],
    "chain_key_without_hash_chain.yaml": [("audit.hash_chain", 5)],
    "threshold_unknown_tier.yaml": [("thresholds[0].tier", 4)],
    "bad_cidr.yaml": [("identity.client_ip.trusted_proxies[1]", 5)],
    "bad_regex.yaml": [("routes[0].match.path", 5)],
    "cost_over_burst.yaml": [("routes[0].limits[0].cost", 7)],
    "several_errors.yaml": [
        ("mode", 3),
        ("max_subjects", 4),
        ("routes[0].limits[0].rate", 9),
        ("routes[0].limits[1].per", 10),
        ("hysteresis.cooldown", 11),
        ("audit.sample_allowed", 13),
    ],
    "bad_storage.yaml": [("storage", 3)],
    "version_2.yaml": [("version", 2)],
    "missing_version.yaml": [("version", None)],
    "exempt_with_limits.yaml": [("routes[0].limits", 7)],
    "throttle_without_tier.yaml": [("thresholds[0].tier", 4)],
    "duplicate_route_name.yaml": [("routes[1].name", 6)],
    "hcaptcha_without_block.yaml": [("challenges.order", 4)],
    "hcaptcha_literal_secret.yaml": [("challenges.hcaptcha.secret", 8)],
    "captcha_hostname_with_scheme.yaml": [("challenges.hcaptcha.hostnames[1]", 8)],
    "verify_limits_in_tokens.yaml": [("challenges.verify_limits[1].cost", 6)],
    "bad_callable.yaml": [("identity.account.callable", 4)],
    "bad_size.yaml": [("routes[0].inspect_max_bytes", 7)],
    "ipv6_prefix_out_of_range.yaml": [("identity.client_ip.ipv6_prefix", 5)],
    "reload_not_a_boolean.yaml": [("reload.sighup", 4), ("reload.signal", 5)],
    "bad_api_key_hash.yaml": [("allow.api_keys[0]", 4)],
    "not_a_mapping.yaml": [("", None)],
    "empty.yaml": [("", None)],
    "too_deep.yaml": [("", 3)],
    "alias_bomb.yaml": [("d[7]", 6)],
    "recursive_alias.yaml": [("risk.signals.a", 3)],
    "booleans_as_numbers.yaml": [
        ("max_subjects", 3),
        ("routes[0].limits[0].burst", 7),
        ("audit.sample_allowed", 8),
        ("thresholds[0].score", 9),
    ],
    "non_text_keys.yaml": [("1", 3), ("null", 4), ("[a, b]", 5), ("mode", 7), ("tiers.1", 8)],
    "huge_numbers.yaml": [
        ("max_subjects", 3),
        ("routes[0].inspect_max_bytes", 7),
        ("routes[0].limits[0].burst", 9),
        ("routes[0].limits[1].rate", 10),
        ("routes[0].limits[1].cost", 10),
        ("audit.rotate.max_bytes", 11),
    ],
    "not_finite.yaml": [("thresholds[0].score", 3), ("risk.signals.abuse.weight", 4)],
    "tokens_not_inspected.yaml": [("routes[0].limits[1].cost", 8)],
    "tier_strips_the_unknown.yaml": [("tiers.slow.strip[1]", 7)],
    "unknown_openai_shape.yaml": [("routes[0].inspect", 6)],
    "unmatched_unknown_route.yaml": [("unmatched", 8)],
    "unmatched_exempt_route.yaml": [("unmatched", 7)],
    "watermark_literal_key.yaml": [("provenance.watermark.key", 6)],
    "signatures_literal_key.yaml": [
        ("provenance.signatures.key", 5),
        ("provenance.signatures.max_bytes", 6),
    ],
    "watermark_header_reserved.yaml": [("provenance.watermark.header", 6)],
    "watermark_header_is_identity.yaml": [("provenance.watermark.header", 9)],
    "challenges_site_name.yaml": [("challenges.site_name", 4)],
    "provenance_unknown_route.yaml": [("provenance.routes[1]", 13), ("provenance.routes[2]", 14)],
    "provenance_settings.yaml": [
        ("provenance.path", 5),
        ("provenance.key", 6),
        ("provenance.retention", 7),
        ("provenance.max_entries", 8),
    ],
    "storage_breaker_slow_probe.yaml": [
        ("storage_breaker.failures", 6),
        ("storage_breaker.probe_every", 7),
    ],
    "metrics_path_with_app_registry.yaml": [("metrics.path", 7)],
    "metrics_bad_values.yaml": [
        ("metrics.enabled", 4),
        ("metrics.registry", 5),
        ("metrics.allow_from[0]", 6),
    ],
}


def issues_of(text: str) -> list[PolicyIssue]:
    with pytest.raises(PolicyError) as caught:
        Policy.from_string(textwrap.dedent(text))
    return list(caught.value.issues)


def only_issue(text: str) -> PolicyIssue:
    issues = issues_of(text)
    assert len(issues) == 1, issues
    return issues[0]


# -- golden files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", GOOD, ids=lambda path: path.name)
def test_good_policy_loads(path: Path) -> None:
    policy = Policy.from_yaml(path)
    assert policy.source == str(path)
    assert policy.version == 1


def test_good_set_is_complete() -> None:
    expected = {"minimal", "spec_example", "observe_literal_secret", "redis_cluster"}
    expected |= {"ipv6_proxies", "account_callable", "merge_keys", "token_budgets"}
    expected |= {"openai_shapes", "unmatched_default_route", "unmatched_refuse"}
    expected |= {"storage_breaker", "audit_chain_key", "audit_chain_key_from_secret"}
    expected |= {"challenges_site_name"}
    expected |= {"provenance", "provenance_routes", "provenance_redis"}
    expected |= {"reload"}
    assert expected <= {path.stem for path in GOOD}


def test_every_bad_file_is_in_the_table() -> None:
    assert {path.name for path in (POLICIES / "bad").glob("*.yaml")} == set(BAD)


@pytest.mark.parametrize(("name", "expected"), sorted(BAD.items()))
def test_bad_policy_names_key_and_line(name: str, expected: list[tuple[str, int | None]]) -> None:
    path = POLICIES / "bad" / name
    assert path.read_text().startswith("#"), "each bad file says what is wrong in a comment"
    with pytest.raises(PolicyError) as caught:
        Policy.from_yaml(path)
    found = {(issue.path, issue.line) for issue in caught.value.issues}
    for key in expected:
        assert key in found, f"{key} not in {found}"
    for issue in caught.value.issues:
        assert issue.file == str(path)
        assert issue.expected and not re.search(
            r"Value error|Input should|pydantic", issue.expected
        )
        assert str(path) in str(caught.value)


def test_several_errors_are_reported_on_distinct_lines() -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.from_yaml(POLICIES / "bad" / "several_errors.yaml")
    lines = [issue.line or 0 for issue in caught.value.issues]
    assert len(lines) == len(BAD["several_errors.yaml"]) == len(set(lines))
    assert lines == sorted(lines)
    assert "6 errors" in str(caught.value)


def test_spec_example_reads_every_section() -> None:
    policy = Policy.from_yaml(POLICIES / "good" / "spec_example.yaml")
    assert policy.secret == "env:GUARDRAIL_SECRET"  # kept as a reference, never resolved at load
    assert [route.name for route in policy.routes] == ["health", "inference", "default"]
    inference = policy.routes[1]
    assert inference.inspect == "openai" and inference.inspect_max_bytes == 256_000
    assert inference.match.methods == frozenset({"POST"})
    assert [limit.cost for limit in inference.limits] == [1, 1, "tokens"]
    assert inference.limits[0].capacity == 20 and inference.limits[2].capacity == 200_000
    assert policy.identity.account is not None and policy.identity.account.header == "x-account-id"
    assert policy.tiers["slow"].stream_rate == Rate(20, 1.0, "20/second")
    assert policy.tiers["slow"].delay == 2.0 and policy.tiers["slow"].max_tokens == 256
    assert policy.challenges.order == ("hcaptcha", "pow")
    assert policy.challenges.hcaptcha is not None and policy.challenges.hcaptcha.timeout == 3.0
    assert policy.challenges.clearance.ttl == 1800.0
    assert policy.audit.rotate.max_bytes == 100_000_000
    assert policy.allow.cidrs == (IPv4Network("52.20.0.0/16"),)
    assert policy.hysteresis.cooldown == 900.0 and policy.risk.half_life == 6 * 3600.0


# -- defaults -------------------------------------------------------------------------------------


def test_defaults_of_a_minimal_policy() -> None:
    policy = Policy.from_string("version: 1")
    assert (policy.mode, policy.storage, policy.on_storage_error) == (
        "enforce",
        "memory://",
        "fail_open",
    )
    assert policy.max_subjects == 1_000_000 and policy.secret is None
    assert policy.identity.api_key is not None and policy.identity.api_key.header == "authorization"
    assert policy.identity.account is None
    assert policy.identity.client_ip.trusted_proxies == ()
    assert (policy.identity.subnet.ipv4_prefix, policy.identity.subnet.ipv6_prefix) == (24, 48)
    assert policy.identity.client_ip.ipv6_prefix == 64  # an IPv6 client's per-ip identity
    assert policy.routes == () and policy.thresholds == () and policy.tiers == {}
    assert policy.risk.half_life == 21_600.0 and policy.risk.signals == {}
    assert policy.allow.accounts == policy.allow.api_keys == policy.allow.cidrs == ()
    assert (policy.hysteresis.margin, policy.hysteresis.cooldown) == (10.0, 900.0)
    challenges = policy.challenges
    assert challenges.prefix == "/.guardrail" and challenges.order == ("pow",)
    assert challenges.hcaptcha is None and challenges.pow.difficulty == 18
    assert (challenges.clearance.ttl, challenges.clearance.max_requests) == (1800.0, 500)
    assert challenges.clearance.bind == ("subject", "subnet", "user_agent")
    assert policy.audit.sink == "stdout://" and policy.audit.hash_chain is True
    assert (policy.audit.rotate.max_bytes, policy.audit.rotate.keep) == (100_000_000, 10)
    assert policy.audit.sample_allowed == 0.0


def test_defaults_of_routes_limits_tiers_and_hcaptcha() -> None:
    policy = Policy.from_string(
        textwrap.dedent(
            """\
            version: 1
            mode: observe
            routes:
              - name: r
                match: {path: /}
                limits: [{per: ip, rate: 60/minute}]
            tiers: {t: {}}
            challenges:
              hcaptcha: {sitekey: s, secret: env:H}
            """
        )
    )
    route = policy.routes[0]
    assert (route.exempt, route.inspect, route.inspect_max_bytes, route.headers) == (
        False,
        None,
        262_144,
        False,
    )
    assert route.match.methods is None
    limit = route.limits[0]
    assert (limit.burst, limit.cost, limit.capacity) == (None, 1, 60)
    tier = policy.tiers["t"]
    assert (tier.limits, tier.delay, tier.max_tokens, tier.stream_rate, tier.header) == (
        (),
        None,
        None,
        None,
        False,
    )
    hcaptcha = policy.challenges.hcaptcha
    assert hcaptcha is not None
    assert hcaptcha.verify_url == "https://api.hcaptcha.com/siteverify"
    assert (hcaptcha.timeout, hcaptcha.on_error) == (3.0, "pow")


def test_models_are_frozen() -> None:
    policy = Policy.from_string("version: 1")
    with pytest.raises(ValidationError):
        policy.mode = "observe"


# -- value types ----------------------------------------------------------------------------------


def rate_of(text: str) -> Rate:
    policy = Policy.from_string(
        "version: 1\n"
        f"routes: [{{name: r, match: {{path: /}}, limits: [{{per: ip, rate: {text}}}]}}]"
    )
    return policy.routes[0].limits[0].rate


@pytest.mark.parametrize(
    ("text", "amount", "seconds"),
    [
        ("60/minute", 60, 60.0),
        ("10 per second", 10, 1.0),
        ("2/5 minutes", 2, 300.0),
        ("200000/day", 200_000, 86_400.0),
        ("1/hour", 1, 3600.0),
    ],
)
def test_rate_parsing(text: str, amount: int, seconds: float) -> None:
    rate = rate_of(text)
    assert rate == Rate(amount, seconds, text)
    assert rate.per_second == pytest.approx(amount / seconds)


@pytest.mark.parametrize("text", ["60/fortnight", "0/minute", "10/second;100/minute", "60", "lots"])
def test_rate_rejected(text: str) -> None:
    with pytest.raises(PolicyError) as caught:
        rate_of(text)
    (issue,) = caught.value.issues
    assert issue.path == "routes[0].limits[0].rate" and issue.line == 2
    assert "limits notation such as 60/minute" in issue.expected


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("15m", 900.0),
        ("6h", 21_600.0),
        ("7d", 604_800.0),
        ("2.5s", 2.5),
        (45, 45.0),
        (1.5, 1.5),
        (0, 0.0),
    ],
)
def test_durations(written: str | float, seconds: float) -> None:
    assert parse_duration(written) == seconds
    policy = Policy.from_string(f"version: 1\ntiers: {{t: {{delay: {written}}}}}")
    assert policy.tiers["t"].delay == seconds


@pytest.mark.parametrize("written", ["6 hours", "-1", "1w", "ms", "true", "[1]"])
def test_duration_rejected(written: str) -> None:
    issue = only_issue(f"version: 1\nhysteresis: {{cooldown: {written}}}")
    assert (issue.path, issue.line) == ("hysteresis.cooldown", 2)
    assert issue.expected.startswith("a duration such as 500ms, 30s, 15m, 6h or 7d")
    with pytest.raises(ValueError, match="a duration such as"):
        parse_duration(written)


def test_zero_is_refused_where_a_duration_must_pass() -> None:
    issue = only_issue("version: 1\nrisk: {half_life: 0s}")
    assert issue.path == "risk.half_life" and "above zero" in issue.expected


@pytest.mark.parametrize(
    ("written", "size"),
    [
        ("256KB", 256_000),
        ("256KiB", 262_144),
        ("1MB", 1_000_000),
        ("100MB", 100_000_000),
        (1000, 1000),
    ],
)
def test_sizes_follow_pydantic_byte_size(written: str | int, size: int) -> None:
    policy = Policy.from_string(f"version: 1\naudit: {{rotate: {{max_bytes: {written}}}}}")
    assert policy.audit.rotate.max_bytes == size


@pytest.mark.parametrize("written", ["a lot", "0", "-5", "true", "12 bananas"])
def test_size_rejected(written: str) -> None:
    issue = only_issue(f"version: 1\naudit: {{rotate: {{max_bytes: {written}}}}}")
    assert issue.path == "audit.rotate.max_bytes" and "256KB" in issue.expected


def test_networks_accept_plain_addresses_as_single_hosts() -> None:
    policy = Policy.from_yaml(POLICIES / "good" / "ipv6_proxies.yaml")
    assert policy.identity.client_ip.trusted_proxies == (
        IPv6Network("::1/128"),
        IPv6Network("2001:db8:1::/48"),
        IPv6Network("fd00::/8"),
        IPv4Network("127.0.0.1/32"),
        IPv4Network("10.0.0.0/8"),
    )
    assert policy.identity.api_key is not None and policy.identity.api_key.header == "x-api-key"


def test_network_with_host_bits_suggests_the_network() -> None:
    issue = only_issue("version: 1\nallow: {cidrs: [192.168.1.7/24]}")
    assert (issue.path, issue.value) == ("allow.cidrs[0]", "192.168.1.7/24")
    assert "did you mean 192.168.1.0/24?" in issue.expected


def test_methods_are_upper_cased() -> None:
    policy = Policy.from_string(
        "version: 1\nroutes: [{name: r, match: {path: /, methods: [get, Post]}}]"
    )
    assert policy.routes[0].match.methods == frozenset({"GET", "POST"})


def test_empty_methods_are_refused() -> None:
    issue = only_issue("version: 1\nroutes: [{name: r, match: {path: /, methods: []}}]")
    assert issue.path == "routes[0].match.methods" and issue.expected == "at least 1 item(s)"


def test_path_regex_is_anchored_at_the_start_only() -> None:
    policy = Policy.from_string("version: 1\nroutes: [{name: r, match: {path: /v1/}}]")
    pattern = policy.routes[0].match.path
    assert pattern.match("/v1/chat/completions")
    assert pattern.match("/api/v1/") is None


def test_regex_error_says_where() -> None:
    issue = only_issue('version: 1\nroutes: [{name: r, match: {path: "/v1/[a-z"}}]')
    assert issue.expected.startswith("a valid regular expression (unterminated character set")


def test_thresholds_are_sorted_by_score() -> None:
    policy = Policy.from_yaml(POLICIES / "good" / "account_callable.yaml")
    assert [(t.score, t.action) for t in policy.thresholds] == [
        (60.0, "throttle"),
        (75.0, "challenge"),
        (90.0, "block"),
    ]


# -- messages -------------------------------------------------------------------------------------


def test_unknown_key_suggests_the_known_ones() -> None:
    issue = only_issue("version: 1\nchallenges: {pow: {dificulty: 20}}")
    assert (issue.path, issue.value, issue.line) == ("challenges.pow.dificulty", "dificulty", 2)
    assert (
        issue.expected
        == "not a known key (did you mean 'difficulty'?); known keys here: difficulty"
    )


def test_literal_choices_are_listed() -> None:
    issue = only_issue("version: 1\non_storage_error: fail_safe")
    assert issue.expected == "one of: fail_open, fail_closed"
    assert str(issue) == "<string>:2: on_storage_error: 'fail_safe': one of: fail_open, fail_closed"


def test_literal_secrets_are_never_echoed() -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.from_yaml(POLICIES / "bad" / "literal_secret_enforce.yaml")
    assert "correct-horse" not in str(caught.value)
    assert "only accepted with mode: observe" in str(caught.value)


def test_a_literal_chain_key_is_never_echoed_and_observe_mode_takes_it() -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.from_yaml(POLICIES / "bad" / "chain_key_literal_enforce.yaml")
    assert "correct-horse" not in str(caught.value)
    assert "a literal key is only accepted with mode: observe" in str(caught.value)
    policy = Policy.from_string("version: 1\nmode: observe\naudit: {chain_key: trial-key}")
    assert policy.audit.chain_key == "trial-key"


def test_chain_key_defaults_to_none_and_is_described_in_the_schema() -> None:
    assert Policy.from_string("version: 1\nsecret: env:S").audit.chain_key is None
    schema = Policy.json_schema()["$defs"]["AuditConfig"]["properties"]["chain_key"]
    assert "HMAC-SHA256" in json.dumps(schema)
    issue = only_issue("version: 1\naudit: {chain_key: 'env:'}")
    assert issue.path == "audit.chain_key" and issue.expected.startswith("env:NAME")


def test_secret_references_must_be_well_formed() -> None:
    issue = only_issue("version: 1\nsecret: 'env:'")
    assert issue.path == "secret" and issue.expected.startswith("env:NAME")


def test_yaml_errors_come_with_a_line() -> None:
    issue = only_issue("version: 1\nmode: [enforce\n")
    assert issue.line is not None and issue.expected.startswith("valid YAML (")


def test_several_documents_are_refused() -> None:
    issue = only_issue("version: 1\n---\nversion: 1\n")
    assert "single document" in issue.expected


def test_duplicate_keys_are_reported_with_the_first_line() -> None:
    issues = issues_of(
        """\
        version: 1
        tiers:
          slow: {delay: 1s}
          fast: {}
          slow: {delay: 2s}
        mode: observed
        """
    )
    assert [(issue.path, issue.line) for issue in issues] == [("tiers.slow", 5), ("mode", 6)]
    assert "already set on line 3" in issues[0].expected


def test_policy_wide_and_field_errors_are_reported_together() -> None:
    issues = issues_of(
        """\
        version: 1
        secret: hunter2
        routes:
          - {name: a, match: {path: /}, limits: [{per: ip, rate: 1/fortnight}]}
          - {name: a, match: {path: /}}
        thresholds: [{score: 50, action: throttle, tier: nope}]
        """
    )
    assert [(issue.path, issue.line) for issue in issues] == [
        ("secret", 2),
        ("routes[0].limits[0].rate", 4),
        ("routes[1].name", 5),
        ("thresholds[0].tier", 6),
    ]


def test_direct_construction_runs_the_policy_wide_checks() -> None:
    with pytest.raises(ValidationError, match="only accepted with mode: observe"):
        Policy.model_validate({"version": 1, "secret": "hunter2"})
    policy = Policy.model_validate({"version": 1, "mode": "observe", "secret": "hunter2"})
    assert policy.source == "<python>" and policy.digest.startswith("sha256:")


# -- account callable -----------------------------------------------------------------------------


def test_account_callable_is_imported_and_callable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "guardrail_test_accounts.py").write_text(
        "def account_of(scope):\n"
        "    return dict(scope['headers']).get(b'x-acct', b'').decode() or None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    policy = Policy.from_string(
        "version: 1\nidentity: {account: {callable: 'guardrail_test_accounts:account_of'}}"
    )
    account = policy.identity.account
    assert account is not None and account.resolve is not None
    assert account.resolve({"type": "http", "headers": [(b"x-acct", b"acct-42")]}) == "acct-42"
    assert "resolve" not in json.dumps(Policy.json_schema())


def test_account_header_has_no_resolver() -> None:
    policy = Policy.from_string("version: 1\nidentity: {account: {header: X-Account-Id}}")
    assert policy.identity.account is not None
    assert policy.identity.account.header == "x-account-id"
    assert policy.identity.account.resolve is None


@pytest.mark.parametrize(
    ("account", "expected"),
    [
        ("{callable: 'os.path:sep'}", "a callable 'module:function'"),
        ("{callable: 'os.path:no_such_thing'}", "an importable 'module:function'"),
        ("{callable: 'not a reference'}", "a 'module:function' reference"),
        ("{header: x-a, callable: 'os.path:basename'}", "exactly one of header or callable"),
        ("{}", "exactly one of header or callable"),
    ],
)
def test_account_mistakes(account: str, expected: str) -> None:
    issue = only_issue(f"version: 1\nidentity:\n  account: {account}")
    assert issue.path.startswith("identity.account") and issue.line == 3
    assert issue.expected.startswith(expected)


# -- source, digest, schema, check_files -----------------------------------------------------------


def test_source_and_digest() -> None:
    text = "version: 1\nmode: observe\n"
    policy = Policy.from_string(text)
    assert policy.source == "<string>"
    assert policy.digest == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    assert Policy.from_string(text, source="x.yaml").digest == policy.digest
    assert Policy.from_string(text + "# a comment\n").digest != policy.digest


def test_from_yaml_digest_is_that_of_the_file_text(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"version: 1\r\nmode: observe # \xc3\xa9\r\n")
    policy = Policy.from_yaml(path)
    assert policy.source == str(path)
    assert policy.digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_json_schema_is_valid_json() -> None:
    schema = Policy.json_schema()
    decoded = json.loads(json.dumps(schema))
    assert decoded["type"] == "object" and decoded["required"] == ["version"]
    assert decoded["additionalProperties"] is False
    assert {"version", "mode", "routes", "tiers", "challenges", "audit"} <= set(
        decoded["properties"]
    )
    limit = decoded["$defs"]["Limit"]["properties"]
    assert limit["rate"]["type"] == "string" and "pattern" in limit["rate"]
    path = decoded["$defs"]["Match"]["properties"]["path"]
    assert (path["type"], path["format"]) == ("string", "regex")


def test_check_files_collects_issues_across_files(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.yaml")
    paths = [
        str(POLICIES / "good" / "minimal.yaml"),
        str(POLICIES / "bad" / "bad_rate.yaml"),
        str(POLICIES / "bad" / "several_errors.yaml"),
        missing,
    ]
    issues = check_files(paths)
    assert [issue.file for issue in issues] == [paths[1]] + [paths[2]] * 6 + [missing]
    assert issues[-1].line is None and "a readable file" in issues[-1].expected
    assert check_files([str(path) for path in GOOD]) == []


def test_non_utf8_file_is_an_issue(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\nmode: \xe9\n")
    (issue,) = check_files([str(path)])
    assert issue.expected.startswith("UTF-8 text")


# -- hostile or odd YAML ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\nrisk: " + "[" * 5000 + "]" * 5000,
        "version: 1\nrisk:\n" + "".join(f"{'  ' * (i + 1)}k{i}:\n" for i in range(3000)),
    ],
    ids=["flow", "block"],
)
def test_deep_nesting_is_an_issue_not_a_recursion_error(text: str) -> None:
    issue = only_issue(text)
    assert issue.expected == "a policy nested at most 50 levels deep"
    assert issue.line is not None and issue.line <= 53
    assert len(repr(issue.value)) < 80  # the offending line, shortened


def test_nesting_through_aliases_counts_too() -> None:
    chain = "\n".join(f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 60))
    issue = only_issue(f"version: 1\na0: &a0 [x]\n{chain}")
    assert issue.expected.startswith("a policy nested at most 50 levels deep once aliases")


def test_alias_bomb_is_refused_quickly() -> None:
    levels = [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    text = "version: 1\nl0: &l0 [x, x, x, x, x, x, x, x, x, x]\n" + "\n".join(levels)
    start = time.perf_counter()
    issue = only_issue(text)
    assert time.perf_counter() - start < 2  # 11 billion values if expanded
    assert issue.expected.startswith("aliases repeating at most 10000 values in all")
    assert (issue.path, issue.line) == ("l3[7]", 5)


def test_aliases_that_repeat_little_are_fine() -> None:
    policy = Policy.from_string(
        textwrap.dedent(
            """\
            version: 1
            routes:
              - {name: a, match: &m {path: /}, limits: &l [{per: ip, rate: 1/second}]}
              - {name: b, match: *m, limits: *l}
            """
        )
    )
    assert policy.routes[0].limits == policy.routes[1].limits


def test_merge_keys_override_and_point_at_their_lines() -> None:
    policy = Policy.from_yaml(POLICIES / "good" / "merge_keys.yaml")
    limits = policy.routes[0].limits
    assert [(limit.per, limit.rate.text, limit.burst, limit.cost) for limit in limits] == [
        ("ip", "10/minute", 5, 1),
        ("subnet", "10/minute", 5, 1),
        ("ip", "20/minute", 5, 2),
    ]
    issues = issues_of(
        """\
        version: 1
        x: &lim {per: ip, rate: 10/minute, burst: 0}
        routes:
          - name: a
            match: {path: /}
            limits:
              - <<: *lim
                per: everyone
                per: ip
        """
    )
    found = [(issue.path, issue.line) for issue in issues]
    assert ("routes[0].limits[0].burst", 7) in found  # merged: the line of <<
    assert ("routes[0].limits[0].per", 9) in found  # an explicit duplicate is still one
    assert ("routes[0].limits[0].per", 8) not in found  # the merged per is no duplicate


def test_non_text_keys_do_not_hide_other_issues() -> None:
    issues = issues_of("version: 1\n? [a, b]\n: x\nmode: strict\n")
    assert [(issue.path, issue.line) for issue in issues] == [("[a, b]", 2), ("mode", 4)]
    assert issues[0].expected == "a key that is text, not a list or a mapping"


def test_a_yaml_boolean_where_a_word_is_expected_hints_to_quote_it() -> None:
    issue = only_issue("version: 1\nmode: yes")
    assert issue.expected.startswith("one of: enforce, observe")
    assert "quote the word" in issue.expected
    assert "quote the word" in only_issue("version: 1\nstorage: off").expected


@pytest.mark.parametrize("version", ["true", "1.0", "'1'"])
def test_version_is_the_number_one(version: str) -> None:
    issue = only_issue(f"version: {version}")
    assert issue.path == "version" and issue.expected.startswith("1, the policy format version")


def test_duplicate_version_keeps_the_duplicate_message() -> None:
    issue = only_issue("version: 1\nversion: 1")
    assert (issue.line, issue.expected) == (
        2,
        "each key once in a mapping; 'version' is already set on line 1",
    )


@pytest.mark.parametrize(
    "setting",
    ["headers: 'yes'", "exempt: 1", "limits: [{per: ip, rate: 1/second, burst: '5'}]"],
)
def test_values_are_not_coerced(setting: str) -> None:
    issue = only_issue(f"version: 1\nroutes: [{{name: r, match: {{path: /}}, {setting}}}]")
    assert issue.path.startswith("routes[0].")


def test_whole_numbers_are_accepted_where_a_fraction_may_be() -> None:
    policy = Policy.from_string(
        "version: 1\nmode: observe\nthresholds: [{score: 50, action: block}]\n"
        "audit: {sample_allowed: 1}\nhysteresis: {margin: 5}"
    )
    assert policy.thresholds[0].score == 50.0 and policy.audit.sample_allowed == 1.0


def test_counts_stop_at_2_to_the_53() -> None:
    limit = "{per: ip, rate: 9007199254740992/day, burst: %d}"
    policy = Policy.from_string(
        f"version: 1\nroutes: [{{name: r, match: {{path: /}}, limits: [{limit % 2**53}]}}]"
    )
    assert policy.routes[0].limits[0].capacity == 2**53
    issue = only_issue(
        f"version: 1\nroutes: [{{name: r, match: {{path: /}}, limits: [{limit % (2**53 + 1)}]}}]"
    )
    assert issue.path == "routes[0].limits[0].burst" and "2**53" in issue.expected


def test_check_files_turns_a_crash_into_an_issue(monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad = str(POLICIES / "good" / "minimal.yaml"), str(POLICIES / "bad" / "bad_rate.yaml")
    real = Policy.from_yaml

    def from_yaml(path: str) -> Policy:
        if path == good:
            raise RuntimeError("boom")
        return real(path)

    monkeypatch.setattr(Policy, "from_yaml", from_yaml)
    issues = check_files([good, bad])
    assert issues[0].file == good and "RuntimeError: boom" in issues[0].expected
    assert [issue.file for issue in issues[1:]] == [bad]


def test_a_route_names_its_openai_shape_or_takes_it_from_the_path() -> None:
    from guardrail.limits import RouteTable
    from guardrail.metering import CHAT, COMPLETIONS, OPENAI, RESPONSES

    policy = Policy.from_yaml(POLICIES / "good" / "openai_shapes.yaml")
    chat, text, responses, by_path = RouteTable(policy.routes).routes
    assert (chat.meter, text.meter, responses.meter) == (CHAT, COMPLETIONS, RESPONSES)
    assert not (chat.by_path or text.by_path or responses.by_path)
    assert by_path.meter is OPENAI and by_path.by_path


def test_an_unknown_openai_shape_is_refused_with_the_choices() -> None:
    issue = only_issue(
        """
        version: 1
        routes:
          - name: inference
            match: {path: /v1/embeddings}
            inspect: openai.embeddings
        """
    )
    assert issue.path == "routes[0].inspect" and issue.value == "openai.embeddings"
    assert "openai.chat, openai.completions, openai.responses" in issue.expected


def test_inspect_timeout_is_a_positive_duration_ten_seconds_by_default():
    route = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
routes:
  - name: inference
    match: {path: /v1/}
    inspect: openai
"""
    assert Policy.from_string(route).routes[0].inspect_timeout == 10.0
    assert (
        Policy.from_string(route + "    inspect_timeout: 1.5s\n").routes[0].inspect_timeout == 1.5
    )
    with pytest.raises(PolicyError) as refused:
        Policy.from_string(route + "    inspect_timeout: 0s\n")
    [issue] = refused.value.issues
    assert (issue.line, issue.path) == (8, "routes[0].inspect_timeout")


@pytest.mark.parametrize(
    ("written", "read"), [("50ms", 0.05), ("request", "request"), ("10s", 10.0), (0.2, 0.2)]
)
def test_risk_share_every(written: object, read: object) -> None:
    policy = Policy.from_string(f"version: 1\nrisk: {{share_every: {written}}}\n")
    assert policy.risk.share_every == read


@pytest.mark.parametrize("written", ["sometimes", "1m", "0", "-1", "true", "5ms"])
def test_risk_share_every_refused(written: object) -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.from_string(f"version: 1\nrisk: {{share_every: {written}}}\n")
    (issue,) = caught.value.issues
    assert issue.path == "risk.share_every"
    assert "from 10ms to 10s" in issue.expected and "request" in issue.expected


def test_provenance_is_off_by_default_and_every_key_is_described() -> None:
    provenance = Policy.from_string("version: 1").provenance
    assert not provenance.enabled and provenance.routes is None
    assert provenance.max_entries == 1_000_000 and provenance.retention == 30 * 86400
    schema = Policy.json_schema()["$defs"]["Provenance"]["properties"]
    assert set(schema) == set(type(provenance).model_fields)
    assert all(field.get("description") for field in schema.values())
    assert "56 MB" in schema["max_entries"]["description"]


def test_a_literal_provenance_key_is_never_echoed() -> None:
    issue = only_issue("version: 1\nprovenance: {key: correct-horse-battery}")
    assert issue.path == "provenance.key" and "correct-horse" not in str(issue)
