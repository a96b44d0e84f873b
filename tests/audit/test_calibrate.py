"""``guardrail calibrate``: thresholds proposed from an observe-mode trail the real middleware
wrote (the simulator's honest users and one campaign), checked against that same trail."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.openai_server import build_app
from guardrail import Policy
from guardrail.audit.calibrate import calibrate, parse_target, render
from guardrail.errors import AuditError
from guardrail.identity import Subject
from guardrail.signals.engine import principal_of
from guardrail.simulate.runner import Config, simulate

REPO = Path(__file__).resolve().parents[2]
#: Honest users, a NAT'd office and the five-account campaign: a small trail with a tail.
ONLY = ("benign", "power_users", "nat_office", "campaign_c")


def observe_policy_text(mode: str = "observe") -> str:
    text = (REPO / "examples" / "policy.yaml").read_text()
    text = text.replace("mode: enforce", f"mode: {mode}", 1)
    return re.sub(r"sample_allowed: 0\.0", "sample_allowed: 1.0", text)


def write_trail(path: Path, mode: str, scale: float) -> Path:
    previous = os.environ.get("GUARDRAIL_SECRET")
    os.environ["GUARDRAIL_SECRET"] = "calibrate-test-secret"
    try:
        asyncio.run(
            simulate(
                build_app(),
                Policy.from_string(observe_policy_text(mode)),
                Config(seed=1, days=0.3, scale=scale, only=ONLY),
                audit=f"file://{path}",
            )
        )
    finally:
        if previous is None:
            os.environ.pop("GUARDRAIL_SECRET", None)
        else:
            os.environ["GUARDRAIL_SECRET"] = previous
    return path


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_trail(tmp_path_factory.mktemp("observe") / "audit.jsonl", "observe", 0.2)


@pytest.fixture(scope="module")
def policy() -> Iterator[Policy]:
    yield Policy.from_string(observe_policy_text())


def peaks_by_hand(path: Path) -> dict[str, tuple[float, dict[str, float]]]:
    """Each principal's peak score and the signals of its first record at that peak."""
    peaks: dict[str, tuple[float, dict[str, float]]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if not isinstance(record.get("score"), int | float) or "subject" not in record:
            continue
        s = record["subject"]
        name = principal_of(Subject(s.get("api_key"), s.get("account"), s["ip"], s["subnet"]))
        score, signals = record["score"], record.get("signals") or {}
        best = peaks.get(name)
        if best is None or score > best[0] or (score == best[0] and signals and not best[1]):
            peaks[name] = (score, signals)
    return peaks


@pytest.mark.parametrize("target", [0.003, 0.02, 0.1, 0.25])
def test_the_proposed_thresholds_mitigate_at_most_the_target_share_of_the_same_trail(
    trail: Path, policy: Policy, target: float
):
    data = calibrate([trail], target, policy)
    peaks = peaks_by_hand(trail)
    assert data["principals"] == len(peaks) > 15
    scores = [band["score"] for band in data["bands"]]
    assert [band["action"] for band in data["bands"]] == ["throttle", "challenge", "block"]
    assert scores == sorted(scores) and len(set(scores)) == 3
    lowest = scores[0]
    reached = sorted(name for name, (peak, _) in peaks.items() if peak >= lowest)
    assert len(reached) <= target * len(peaks)
    assert sorted(row["principal"] for row in data["mitigated"]) == reached
    # the lowest band is as low as the target allows: one point less lets in one too many
    assert sum(1 for peak, _ in peaks.values() if peak >= lowest - 1) > target * len(peaks)


def test_the_listed_principals_carry_their_peak_and_its_top_signals(trail: Path, policy: Policy):
    data = calibrate([trail], 0.1, policy)
    peaks = peaks_by_hand(trail)
    assert data["mitigated"], "a tenth of the principals"
    for row in data["mitigated"]:
        peak, signals = peaks[row["principal"]]
        assert row["peak"] == peak
        top = sorted(signals.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        assert list(row["top_signals"].items()) == top
        assert row["principal"] == "a:" + row["subject"]["account"]
        assert row["band"] == [b["action"] for b in data["bands"] if peak >= b["score"]][-1]
    shown = [row["peak"] for row in data["mitigated"]]
    assert shown == sorted(shown, reverse=True)


def test_the_distribution_is_of_per_principal_peaks(trail: Path, policy: Policy):
    data = calibrate([trail], 0.003, policy)
    peaks = sorted(peak for peak, _ in peaks_by_hand(trail).values())
    assert data["peaks"]["max"] == peaks[-1]
    assert data["peaks"]["p50"] == peaks[math.ceil(len(peaks) / 2) - 1]
    values = list(data["peaks"].values())
    assert values == sorted(values)


def test_the_printed_thresholds_load_as_the_policy_s_own(trail: Path, policy: Policy):
    data = calibrate([trail], 0.1, policy)
    text = observe_policy_text()
    start = text.index("\nthresholds:")
    end = text.index("\nhysteresis:")
    pasted = Policy.from_string(text[:start] + "\n" + data["yaml"] + "\n" + text[end:])
    assert [(t.score, t.action, t.tier) for t in pasted.thresholds] == [
        (b["score"], b["action"], b["tier"]) for b in data["bands"]
    ]
    assert render(data).endswith(data["yaml"])


def test_without_a_policy_the_three_bands_are_proposed(trail: Path):
    data = calibrate([trail], 0.1)
    assert [(b["action"], b["tier"]) for b in data["bands"]] == [
        ("throttle", "slow"),
        ("challenge", None),
        ("block", None),
    ]
    assert "current" not in data["bands"][0]
    assert data["hysteresis"] == {"margin": 10.0, "cooldown": 900.0}


def test_an_enforce_mode_trail_is_refused_unless_asked(tmp_path: Path):
    path = write_trail(tmp_path / "enforce.jsonl", "enforce", 0.05)
    with pytest.raises(AuditError, match=r"mode enforce.*--allow-enforce"):
        calibrate([path])
    data = calibrate([path], allow_enforce=True)
    assert any("mode enforce" in note for note in data["notes"])


# --- a hand-made trail for the edges ------------------------------------------------------


def record(account: str | None, score: float | None, **extra: Any) -> dict[str, Any]:
    subject = {"ip": "203.0.113.7", "subnet": "203.0.113.0/24"}
    if account is not None:
        subject["account"] = account
    out: dict[str, Any] = {
        "ts": extra.pop("ts", "2026-11-02T00:00:00.000Z"),
        "mode": "observe",
        "action": "allow",
        "subject": subject,
        "score": score,
        "signals": {},
    }
    return {**out, **extra}


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_unscored_and_unmatched_records_are_skipped_and_repeats_counted(tmp_path: Path):
    records = [record(f"acct-{n}", float(n)) for n in range(9)]
    records += [
        record("acct-9", 5.0),
        {"ts": "2026-11-02T00:00:01.000Z", "action": "unmatched", "paths": {"GET /x": 3}},
        record("acct-9", 80.0, action="limit", repeated=4, signals={"request_volume": 30.0}),
        record("acct-9", 90.0, ts="2026-11-02T00:00:02.000Z", signals={"refusals": 9.0}),
        record(None, None),
    ]
    data = calibrate([write(tmp_path / "a.jsonl", records)], 0.1)
    assert data["principals"] == 10 and data["skipped"] == 2
    assert data["bands"][0]["score"] == 9  # one of ten may be mitigated: acct-9 (90)
    (row,) = data["mitigated"]
    assert row["principal"] == "a:acct-9" and row["peak"] == 90.0
    assert row["requests"] == 6 and row["served_before"] == 1
    assert row["top_signals"] == {"refusals": 9.0}


def test_a_keyless_ipv6_client_is_its_network_as_the_engine_keys_it(tmp_path: Path):
    records = [
        record(None, 10.0, subject={"ip": "2001:db8::1", "subnet": "2001:db8::/48"}),
        record(None, 20.0, subject={"ip": "2001:db8::2", "subnet": "2001:db8::/48"}),
    ]
    data = calibrate([write(tmp_path / "a.jsonl", records)], 0.5)
    assert data["principals"] == 1
    assert data["mitigated"] == []


def test_a_trail_of_peaks_at_the_top_of_the_scale_says_the_target_cannot_be_met(
    tmp_path: Path,
):
    records = [record(f"acct-{n}", 100.0) for n in range(3)] + [record("acct-x", 5.0)]
    data = calibrate([write(tmp_path / "a.jsonl", records)], 0.25)
    assert not data["met"]
    assert any("cannot be met" in note for note in data["notes"])
    assert not any("no plain allows" in note for note in data["notes"])


def test_nothing_scored_is_an_error(tmp_path: Path):
    path = write(tmp_path / "a.jsonl", [{"action": "unmatched", "paths": {}}])
    with pytest.raises(AuditError, match="no scored records"):
        calibrate([path])
    with pytest.raises(AuditError, match="no audit trail"):
        calibrate([tmp_path / "missing.jsonl"])


@pytest.mark.parametrize(
    ("text", "share"), [("0.3%", 0.003), ("0.003", 0.003), ("50%", 0.5), (" 2 % ", 0.02)]
)
def test_a_target_reads_as_a_percentage_or_a_share(text: str, share: float):
    assert parse_target(text) == pytest.approx(share)


@pytest.mark.parametrize("text", ["51%", "0.6", "0", "-1%", "nan", "lots", "%"])
def test_a_bad_target_is_refused(text: str):
    with pytest.raises(ValueError, match="--target"):
        parse_target(text)
