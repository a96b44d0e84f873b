"""Issue 13's populations: habits that are not templates, popular builds a campaign shares,
and the two campaigns that hide behind them; and the report's account of why honest
accounts were mitigated."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from itertools import pairwise

from guardrail.signals.features import fingerprint
from guardrail.signals.sketch import sketch
from guardrail.simulate import network, prompts
from guardrail.simulate.populations import stream
from guardrail.simulate.report import Tally, render, report
from guardrail.simulate.traffic import SimRequest, population_rng, single


def by_account(requests: list[SimRequest]) -> dict[str, list[SimRequest]]:
    out: dict[str, list[SimRequest]] = defaultdict(list)
    for request in requests:
        out[request.account].append(request)
    return out


def users(request: SimRequest) -> list[str]:
    messages = json.loads(request.body)["messages"]
    return [m["content"] for m in messages if m["role"] == "user"]


def habit_of(prompts_: list[str]) -> tuple[str, ...]:
    """The phrases an account ends its prompts with."""
    return tuple({p for t in prompts_ for p in prompts.HABITUAL_PHRASES if t.endswith(p)})


def fingerprints(requests: list[SimRequest]) -> set[str | None]:
    return {fingerprint({"headers": list(r.headers)}) for r in requests}


def test_habitual_askers_end_most_varied_questions_with_one_or_two_phrases_from_home():
    requests = list(stream(1, 2.0, 1.0, ["habitual_askers"]))
    accounts = by_account(requests)
    assert len(accounts) == 25
    ending = total = 0
    for mine in accounts.values():
        asked = [users(r)[-1] for r in mine]
        phrases = habit_of(asked)
        assert 1 <= len(phrases) <= 2
        ended = sum(any(t.endswith(p) for p in phrases) for t in asked)
        ending, total = ending + ended, total + len(asked)
        # the questions are real and varied: the same phrase on new questions of different
        # sketches (follow-ups such as "Why?" recur, as they do)
        opening = [users(r)[0] for r in mine if len(users(r)) == 1]
        stems = [t.removesuffix(p) for t in opening for p in phrases if t.endswith(p)]
        distinct = {s.values for s in map(sketch, stems) if s is not None}
        assert len(distinct) >= 0.9 * len(stems)
        assert len({r.ip for r in mine}) == 1  # one home
    assert 0.8 <= ending / total <= 0.92
    homes = {r.ip for r in requests}
    assert len(homes) < 25  # some households share their address
    assert all(network.subnet_of(ip).split(".")[0] != "10" for ip in homes)


def test_campaign_e_accounts_look_habitual_and_share_a_sticky_residential_provider():
    requests = list(stream(1, 1.0, 0.2, ["campaign_e"]))
    accounts = by_account(requests)
    assert len(accounts) == 12
    provider = set(network.residential_provider(population_rng(1, "campaign_e"), 800, 3000))
    assert {r.ip for r in requests} <= provider
    assert len({network.subnet_of(r.ip) for r in requests}) > 100  # exits over many /24s
    pools = [{r.ip for r in mine} for mine in accounts.values()]
    assert any(a & b for i, a in enumerate(pools) for b in pools[i + 1 :])  # one shared pool
    assert statistics.median(map(len, accounts.values())) > 100  # a power user's, in a day
    ending = 0
    for mine in accounts.values():
        for before, after in pairwise(mine):
            if len(users(after)) > 1:  # the same conversation: the session's exit address
                assert after.ip == before.ip
        asked = [users(r)[-1] for r in mine]
        phrases = habit_of(asked)
        ending += sum(any(t.endswith(p) for p in phrases) for t in asked)
    assert 0.8 <= ending / len(requests) <= 0.92  # 80-90% of prompts, as the honest do


def test_campaign_f_wears_exactly_the_builds_of_the_honest_popular_clients():
    campaign = list(stream(1, 1.0, 0.3, ["campaign_f"]))
    honest = list(stream(1, 1.0, 0.1, ["popular_clients"]))
    assert fingerprints(campaign) == fingerprints(honest)
    assert len(fingerprints(campaign)) == 6  # three SDK builds, three browser releases


def test_why_honest_accounts_were_mitigated_counts_first_mitigations_top_signals():
    tally = Tally([("habitual_askers", "benign", 4), ("campaign_e", "campaign", 1)])

    def add(t: float, population: str, account: str, mitigation: str | None, **signals: float):
        request = SimRequest(t, population, account, "198.51.100.7", (), single({}, "hi"))
        tally.add(request, "served", mitigation, signals, 0.0)

    add(1, "habitual_askers", "h1", None, reasoning=9.0)
    add(2, "habitual_askers", "h1", "throttle", reasoning=30.0, templating=20.0, volume=1.0, x=0.5)
    add(3, "habitual_askers", "h1", "challenge", network=50.0)  # not the first: not counted
    add(4, "habitual_askers", "h2", "throttle", reasoning=40.0, cohort=35.0)
    add(5, "habitual_askers", "h3", "throttle")  # decided from standing: no breakdown
    add(5.5, "habitual_askers", "h3", "throttle", volume=5.0)  # so this one says why
    add(5.7, "habitual_askers", "h4", None, reasoning=10.0)
    add(6, "campaign_e", "e1", None)
    add(7, "campaign_e", "e1", None)
    add(8, "campaign_e", "e1", "throttle", network=40.0)
    data = report(tally, {"seed": 1})
    honest = data["populations"][0]
    assert honest["why_mitigated"] == [
        {"name": "reasoning", "accounts": 2},
        {"name": "volume", "accounts": 2},
        {"name": "cohort", "accounts": 1},
        {"name": "templating", "accounts": 1},
    ]
    summary = data["summary"]
    assert (summary["honest_accounts_mitigated"], summary["honest_accounts"]) == (3, 4)
    assert summary["campaigns"] == {
        "campaign_e": {"recall": 1.0, "median_served_before_first_mitigation": 2.0}
    }
    run = {
        "seed": 1, "days": 1, "start": "x", "scale": 1, "policy": "p", "mode": "enforce",
        "app": "a", "storage": "s", "requests": 8, "wall_seconds": 1.0,
        "requests_per_second": 8, "audit_records": 0,
    }  # fmt: skip
    text = render({**data, "run": {**data["run"], **run}})
    assert "honest accounts mitigated: 3 of 4 (75.00%)" in text
    assert "campaign_e: recall 100.0%, median requests served before first mitigation 2" in text
    assert "habitual_askers       reasoning 2, volume 2, cohort 1, templating 1" in text
