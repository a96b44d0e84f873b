"""The ``guardrail`` command line (SPEC section 5)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from guardrail.cli import main
from guardrail.identity import hash_key

from helpers import POLICY, SECRET, audit_records, bearer, build, client

POLICIES = Path(__file__).parent / "policies"
BAD = sorted(str(p) for p in (POLICIES / "bad").glob("*.yaml"))
GOOD = sorted(str(p) for p in (POLICIES / "good").glob("*.yaml"))


def test_check_accepts_every_good_policy(capsys: pytest.CaptureFixture[str]):
    assert main(["check", *GOOD]) == 0
    out = capsys.readouterr().out
    assert all(f"{path}: ok" in out for path in GOOD)


def test_check_prints_every_error_of_every_bad_policy_with_line_numbers(
    capsys: pytest.CaptureFixture[str],
):
    assert main(["check", *BAD]) == 1
    out = capsys.readouterr().out.splitlines()
    for path in BAD:
        assert any(line.startswith(path) for line in out), path
    # Every file's errors carry a line number, except documents with nothing to point at.
    whole_document = {"empty.yaml", "missing_version.yaml", "not_a_mapping.yaml"}
    for path in BAD:
        if Path(path).name in whole_document:
            continue
        mine = [line for line in out if line.startswith(path + ":")]
        assert mine and all(line.split(":", 2)[1].isdigit() for line in mine), path
    several = [line for line in out if "several_errors.yaml" in line]
    assert len(several) == 6
    assert len({line.split(":")[1] for line in several}) == 6  # each on its own line


def test_check_as_a_real_command(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "guardrail", "check", *BAD],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "several_errors.yaml:3: mode: 'strict': one of: enforce, observe" in result.stdout


def test_schema_is_json_schema(capsys: pytest.CaptureFixture[str]):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["type"] == "object"
    assert {"version", "routes", "identity", "audit"} <= set(schema["properties"])
    inspect = json.dumps(schema["$defs"]["Route"]["properties"]["inspect"])
    for shape in ("openai", "openai.chat", "openai.completions", "openai.responses"):
        assert f'"{shape}"' in inspect


def test_hash_key_matches_what_the_audit_log_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    assert main(["hash-key", "--policy", str(policy), "sk-findme"]) == 0
    assert capsys.readouterr().out.strip() == hash_key(SECRET.encode(), "sk-findme")


def test_hash_key_without_secret_fails_clearly(tmp_path: Path, capsys):
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\n")
    assert main(["hash-key", "--policy", str(policy), "sk-x"]) == 1
    assert "no `secret`" in capsys.readouterr().err


def test_hash_key_with_unset_env_secret_names_the_variable(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.delenv("GUARDRAIL_TEST_SECRET")
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    assert main(["hash-key", "--policy", str(policy), "sk-x"]) == 1
    assert "GUARDRAIL_TEST_SECRET" in capsys.readouterr().err


async def make_trail(tmp_path: Path, clock) -> Path:
    app = build(tmp_path, clock)
    async with client(app) as http:
        for _ in range(5):
            await http.get("/page", headers=bearer("sk-cli"))
            clock.advance(60)
            await http.get("/page", headers=bearer("sk-cli"))
            await http.get("/page", headers=bearer("sk-cli"))
    await app.shutdown()
    return tmp_path / "audit.jsonl"


async def test_audit_summary_tail_and_verify_on_a_real_trail(tmp_path: Path, clock, capsys):
    trail = await make_trail(tmp_path, clock)
    records = audit_records(tmp_path)
    assert records and {r["action"] for r in records} == {"limit"}

    assert main(["audit", "summary", str(trail), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["by_action"] == {"limit": len(records)}

    assert main(["audit", "summary", str(trail)]) == 0
    assert "limit" in capsys.readouterr().out

    assert main(["audit", "tail", str(trail)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum("limit" in line for line in lines) == len(records)

    assert main(["audit", "verify", str(trail)]) == 0
    capsys.readouterr()
    tampered = trail.read_text().replace('"status":429', '"status":200', 1)
    trail.write_text(tampered)
    assert main(["audit", "verify", str(trail)]) == 1
    assert "audit.jsonl:2" in capsys.readouterr().err  # the link after the tampered line breaks


def test_check_warns_of_a_setting_that_leaves_a_way_around_and_still_accepts_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    policy = tmp_path / "open.yaml"
    policy.write_text(
        POLICY
        + """challenges:
  order: [hcaptcha, pow]
  hcaptcha:
    sitekey: 10000000-ffff-ffff-ffff-000000000001
    secret: env:GUARDRAIL_TEST_SECRET
    on_error: open
"""
    )
    assert main(["check", str(policy)]) == 0
    out = capsys.readouterr().out.splitlines()
    [warning] = [line for line in out if line.startswith("warning:") and "on_error" in line]
    line = policy.read_text().splitlines().index("    on_error: open") + 1
    assert warning.startswith(f"warning: {policy}:{line}: challenges.hcaptcha.on_error: 'open': ")
    assert "pow or closed" in warning
    assert out[-1] == f"{policy}: ok"


@pytest.mark.parametrize(
    ("proxies", "warned"), [("[]", True), ("[10.0.0.1]", False)], ids=["no-proxy", "proxy"]
)
def test_check_warns_of_an_account_header_no_proxy_can_send(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], proxies: str, warned: bool
):
    policy = tmp_path / "account.yaml"
    policy.write_text(
        f"""version: 1
secret: env:GUARDRAIL_TEST_SECRET
identity:
  account: {{header: x-account-id}}
  client_ip: {{trusted_proxies: {proxies}}}
"""
    )
    assert main(["check", str(policy)]) == 0
    out = capsys.readouterr().out.splitlines()
    warnings = [line for line in out if line.startswith("warning:")]
    assert out[-1] == f"{policy}: ok"
    if not warned:
        assert warnings == []
        return
    [warning] = warnings
    line = policy.read_text().splitlines().index("  account: {header: x-account-id}") + 1
    assert warning.startswith(
        f"warning: {policy}:{line}: identity.account.header: 'x-account-id': "
    )
    assert "trusted_proxies" in warning


def test_check_warns_of_a_body_deadline_too_long_to_bound_stalled_clients(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    policy = tmp_path / "slow.yaml"
    policy.write_text(
        """version: 1
secret: env:GUARDRAIL_TEST_SECRET
routes:
  - name: inference
    match: {path: /v1/}
    inspect: openai
    inspect_timeout: 5m
unmatched: inference
"""
    )
    assert main(["check", str(policy)]) == 0
    out = capsys.readouterr().out.splitlines()
    [warning] = [line for line in out if line.startswith("warning:")]
    assert warning.startswith(f"warning: {policy}:7: routes[0].inspect_timeout: 300.0: ")
    assert "at most 60s" in warning


async def bare_asgi(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app with no framework: nothing says what its routes are."""


def test_routes_names_an_app_it_cannot_import_or_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\n")
    assert main(["routes", str(policy), "--app", "no_such_module_x:app"]) == 1
    assert "cannot import it (ModuleNotFoundError" in capsys.readouterr().err
    assert main(["routes", str(policy), "--app", "test_cli:bare_asgi"]) == 1
    assert "cannot read the routes of a" in capsys.readouterr().err


def test_routes_says_when_it_is_given_a_factory(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\n")
    assert main(["routes", str(policy), "--app", "helpers:echo_app"]) == 1
    assert "a function: an app factory?" in capsys.readouterr().err


# --- calibrate -----------------------------------------------------------------------------

HONEST = "What is the capital of country number {}?"


async def observe_trail(tmp_path: Path, clock: Any, mode: str = "observe") -> Path:
    """Twenty accounts asking plain questions and one asking for reasoning every time, through
    the real middleware in ``mode`` with every allow recorded."""
    from test_middleware_risk import policy

    text = policy(1.0, mode=mode, extra="audit: {sample_allowed: 1.0}\n")
    app = build(tmp_path, clock, text)
    async with client(app, peer="10.0.0.1") as http:  # a trusted proxy: accounts believed
        for n in range(8):
            for i, account in enumerate([f"acct-{i:02}" for i in range(20)] + ["acct-reasoner"]):
                prompt = HONEST if account != "acct-reasoner" else "Show your full reasoning: {}"
                body = {"model": "m", "messages": [{"role": "user", "content": prompt.format(n)}]}
                headers = {
                    **bearer(f"sk-{account}"),
                    "x-account-id": account,
                    "x-forwarded-for": f"198.51.100.{i}",
                }
                response = await http.post("/v1/chat/completions", json=body, headers=headers)
                assert response.status_code == 200
                clock.advance(3)
    await app.shutdown()
    return tmp_path / "audit.jsonl"


async def test_calibrate_lists_who_would_be_mitigated_and_why_as_json(
    tmp_path: Path, clock: Any, capsys: pytest.CaptureFixture[str]
):
    trail = await observe_trail(tmp_path, clock)
    assert main(["calibrate", str(trail), "--target", "5%", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["principals"] == 21 and data["allowed"] == 1
    (row,) = data["mitigated"]
    assert row["principal"] == "a:acct-reasoner" and row["subject"]["account"] == "acct-reasoner"
    assert list(row["top_signals"]) == ["reasoning_extraction"]
    assert row["peak"] == max(r["score"] for r in audit_records(tmp_path))
    assert data["bands"][0]["score"] <= row["peak"] and data["bands"][0]["principals"] == 1


async def test_calibrate_prints_thresholds_a_policy_loads(
    tmp_path: Path, clock: Any, capsys: pytest.CaptureFixture[str]
):
    from guardrail import Policy
    from test_middleware_risk import policy

    trail = await observe_trail(tmp_path, clock)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy(1.0, mode="observe"))
    assert main(["calibrate", str(trail), "--policy", str(policy_file), "--target", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "a:acct-reasoner" in out and "reasoning_extraction=" in out
    pasted = out[out.index("thresholds:") :]
    text = policy(1.0, mode="observe")
    text = text[: text.index("thresholds:")] + pasted + "\n" + text[text.index("tiers:") :]
    loaded = Policy.from_string(text)
    assert [t.action for t in loaded.thresholds] == ["throttle", "challenge", "block"]
    assert loaded.thresholds[0].tier == "slow"


async def test_calibrate_refuses_an_enforce_trail_and_a_bad_target(
    tmp_path: Path, clock: Any, capsys: pytest.CaptureFixture[str]
):
    trail = await observe_trail(tmp_path, clock, mode="enforce")
    assert main(["calibrate", str(trail)]) == 1
    assert "mode enforce" in capsys.readouterr().err
    assert main(["calibrate", str(trail), "--allow-enforce", "--target", "5%"]) == 0
    capsys.readouterr()
    assert main(["calibrate", str(trail), "--target", "60%"]) == 1
    assert "at most 50%" in capsys.readouterr().err
    assert main(["calibrate", str(tmp_path / "none.jsonl")]) == 1
    assert "no audit trail" in capsys.readouterr().err
