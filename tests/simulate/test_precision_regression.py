"""Issue 13's regression tests: each honest class of the simulator, run through the real
middleware and risk engine next to the campaign that looks most like it (or shares its
client builds or networks), mitigates none of its accounts, while the campaign is caught.

Small scales and one simulated day, so that the lot runs in the suite; the README's table
is the full two-day run. The chaperone campaign makes the test mean something: without it,
a class could pass because the engine saw nothing at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from examples.openai_server import build_app
from guardrail import Policy
from guardrail.simulate.report import report
from guardrail.simulate.runner import Config, simulate

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_POLICY = REPO / "examples" / "policy.yaml"

#: (honest class, the campaign beside it, scale): the campaign that hides behind the class
#: (E behind habitual askers, F on popular builds) or shares its kind of network or traffic.
CLASSES = [
    ("habitual_askers", "campaign_e", 0.5),
    ("popular_clients", "campaign_f", 0.2),
    ("benign", "campaign_b", 0.1),
    ("power_users", "campaign_d", 0.5),
    ("nat_office", "campaign_a", 0.1),
    ("coding_agents", "campaign_a", 0.1),
    ("ci_batch", "campaign_a", 0.4),
]


@pytest.fixture
def example_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAIL_SECRET", "simulation-test-secret")


async def run(tmp_path: Path, seed: int, names: list[str], scale: float) -> dict[str, Any]:
    tally, _ = await simulate(
        build_app(),
        Policy.from_yaml(EXAMPLE_POLICY),
        Config(seed=seed, days=1.0, scale=scale, only=names),
        audit=f"file://{tmp_path / 'audit.jsonl'}",
    )
    assert tally.app_errors == 0, tally.first_app_error
    return {row["population"]: row for row in report(tally, {})["populations"]}


@pytest.mark.parametrize(("honest", "campaign", "scale"), CLASSES)
async def test_an_honest_class_beside_its_look_alike_campaign_is_never_mitigated(
    tmp_path: Path, example_secret: None, honest: str, campaign: str, scale: float
) -> None:
    rows = await run(tmp_path, 4, [honest, campaign], scale)
    mine, theirs = rows[honest], rows[campaign]
    assert mine["active_accounts"] >= 2
    assert mine["accounts_mitigated"] == 0, mine["why_mitigated"]
    assert theirs["accounts_mitigated"] >= 1  # the engine was seeing something


async def test_the_hydra_is_caught_by_the_frames_its_accounts_share(
    tmp_path: Path, example_secret: None
) -> None:
    """Campaign C, five corporate accounts a quarter of whose work is extraction in a few
    frames, beside an office of a hundred honest people behind one NAT (some on one class
    assignment): the frames the hydra's accounts share on their network name all five, and
    the office's shared assignment names no one."""
    rows = await run(tmp_path, 4, ["campaign_c", "nat_office"], 1.0)
    hydra, office = rows["campaign_c"], rows["nat_office"]
    assert hydra["accounts_mitigated"] >= 4, hydra
    assert office["active_accounts"] >= 20
    assert office["accounts_mitigated"] == 0, office["why_mitigated"]
