"""The simulated populations: reproducible, and each shaped the way its description claims."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from itertools import pairwise
from typing import Any

import pytest

from guardrail.simulate import populations, prompts
from guardrail.simulate.populations import stream
from guardrail.simulate.traffic import SimRequest


def by_account(requests: list[SimRequest]) -> dict[str, list[SimRequest]]:
    out: dict[str, list[SimRequest]] = defaultdict(list)
    for request in requests:
        out[request.account].append(request)
    return out


def messages(request: SimRequest) -> list[dict[str, Any]]:
    return json.loads(request.body)["messages"]


def prompt(request: SimRequest) -> str:
    return next(m["content"] for m in reversed(messages(request)) if m["role"] == "user")


def header(request: SimRequest, name: bytes) -> bytes:
    return dict(request.headers)[name]


def subnet(ip: str) -> str:
    return ip.rsplit(".", 1)[0]


def only(name: str, days: float, scale: float = 1.0, seed: int = 1) -> list[SimRequest]:
    return list(stream(seed, days, scale, [name]))


def test_same_seed_same_stream_and_other_seeds_differ():
    first = list(stream(7, 0.3, 0.05))
    again = list(stream(7, 0.3, 0.05))
    other = list(stream(8, 0.3, 0.05))
    assert len(first) > 200
    assert first == again
    assert first != other
    assert [r.t for r in first] == sorted(r.t for r in first)
    assert {r.population for r in first} >= {"benign", "campaign_a", "campaign_b", "ci_batch"}


def test_a_population_does_not_depend_on_the_others():
    alone = only("campaign_b", 0.3, 0.05)
    mixed = [r for r in stream(1, 0.3, 0.05) if r.population == "campaign_b"]
    assert alone and alone == mixed


def test_sizes_at_scale_one_and_small_scales_keep_one_account_each():
    assert populations.sizes(1.0) == {
        "benign": 400,
        "power_users": 20,
        "coding_agents": 40,
        "nat_office": 100,
        "ci_batch": 5,
        "eval_harness": 3,
        "habitual_askers": 25,
        "popular_clients": 500,
        "campaign_a": 300,
        "campaign_b": 300,
        "campaign_c": 5,
        "campaign_d": 60,
        "campaign_e": 60,
        "campaign_f": 100,
    }
    assert all(n >= 1 for n in populations.sizes(0.001).values())


def test_account_ids_and_keys_do_not_name_the_population():
    for request in stream(1, 0.2, 0.05):
        assert request.population not in request.account
        assert b"campaign" not in header(request, b"authorization")


def test_campaign_a_sybils_sit_on_few_datacenter_subnets_with_one_script_and_steady_timing():
    requests = only("campaign_a", 0.5)
    accounts = by_account(requests)
    assert len(accounts) > 200
    assert 3 <= len({subnet(r.ip) for r in requests}) <= 4
    assert len({header(r, b"user-agent") for r in requests}) == 1
    assert header(requests[0], b"user-agent").startswith(b"python-requests/")
    assert {json.loads(r.body)["max_tokens"] for r in requests} == {8192}
    assert all("step" in prompt(r).lower() or "chain of thought" in prompt(r) for r in requests)
    for mine in accounts.values():
        assert len({r.ip for r in mine}) == 1
        gaps = [b.t - a.t for a, b in pairwise(mine)]
        in_shift = [g for g in gaps if g < 60]
        if len(in_shift) >= 2:
            assert max(in_shift) / min(in_shift) <= 1.03 / 0.97 + 1e-9  # period ± 3%


def test_campaign_b_rotates_over_many_residential_subnets_with_paraphrased_instructions():
    requests = only("campaign_b", 0.5, 0.1)
    accounts = by_account(requests)
    assert len(accounts) == 30
    assert len({subnet(r.ip) for r in requests}) > 500
    for mine in accounts.values():
        assert len({subnet(r.ip) for r in mine}) >= 0.8 * len(mine)
    assert len({header(r, b"user-agent") for r in requests}) == 1
    assert header(requests[0], b"user-agent") == b"OpenAI/Python 1.54.3"
    instructions = {line for r in requests for line in prompt(r).split("\n\n") if "step" in line}
    assert len(instructions) > 100  # phrased differently nearly every time
    # jittered, not ticking: inter-arrival times of one account vary a lot
    times = [r.t for r in max(accounts.values(), key=len)]
    gaps = [b - a for a, b in pairwise(times)]
    assert statistics.pstdev(gaps) / statistics.mean(gaps) > 0.5


def test_nat_office_is_a_hundred_accounts_behind_a_handful_of_addresses_on_one_subnet():
    requests = only("nat_office", 2.0)
    accounts = by_account(requests)
    assert 60 <= len(accounts) <= 100
    assert len({subnet(r.ip) for r in requests}) == 1
    assert 4 <= len({r.ip for r in requests}) <= 6
    assert len({header(r, b"user-agent") for r in requests}) > 10
    firsts = {prompt(r) for r in requests if len(messages(r)) == 1}
    shared = [p for p in firsts if any(a in p.lower() for a in prompts.ASSIGNMENTS)]
    assert shared, "some students ask about the class assignment"
    assert len(set(shared)) == len(shared), "each in their own words"


def test_coding_agents_burst_then_pause_and_share_one_tool_fingerprint():
    requests = only("coding_agents", 1.0, 0.1)
    accounts = by_account(requests)
    assert len(accounts) >= 3
    assert len({header(r, b"user-agent") for r in requests}) == 1
    systems = {messages(r)[0]["content"] for r in requests}
    assert len(systems) == 1 and len(systems.pop()) > 1800
    for mine in accounts.values():
        gaps = [b.t - a.t for a, b in pairwise(mine)]
        assert all(2.0 <= g <= 10.0 or g >= 120.0 for g in gaps)
        bursts, size = [], 1
        for g in gaps:
            if g > 10.0:
                bursts.append(size)
                size = 1
            else:
                size += 1
        assert all(15 <= n <= 70 for n in bursts)  # every burst but the last (cut by the end)
        assert size <= 70
    turns = [prompt(r) for r in requests]
    assert len(set(turns)) > 0.8 * len(turns)  # tool output and code: diverse


def test_chat_clients_resend_a_growing_history_with_one_new_user_turn():
    requests = only("benign", 1.0, 0.2)
    grew = 0
    for mine in by_account(requests).values():
        for before, after in pairwise(mine):
            old, new = messages(before), messages(after)
            if len(new) == 1:
                continue  # a new conversation
            assert new[: len(old)] == old
            assert [m["role"] for m in new[len(old) :]] == ["assistant", "user"]
            grew += 1
    assert grew > 100


def test_benign_accounts_are_varied_people_on_one_or_two_home_addresses():
    requests = only("benign", 2.0)
    accounts = by_account(requests)
    assert len(accounts) > 250
    assert all(len({r.ip for r in mine}) <= 2 for mine in accounts.values())
    agents = {header(r, b"user-agent") for r in requests}
    assert len(agents) > 30
    assert any(a.startswith(b"Mozilla/") for a in agents)
    assert any(a.startswith(b"OpenAI/Python") for a in agents)
    assert any(a.startswith(b"OpenAI/JS") for a in agents)
    assert any(a.startswith(b"curl/") for a in agents)
    firsts = [prompt(r) for r in requests if len(messages(r)) == 1]
    assert len(set(firsts)) > 0.95 * len(firsts)
    openings = [
        [prompt(r).lower() for r in mine if len(messages(r)) == 1] for mine in accounts.values()
    ]
    openings = [texts for texts in openings if len(texts) >= 3]
    habitual = sum(
        sum(any(h.lower() in text for h in prompts.REASONING_HABITS) for text in texts)
        >= len(texts) / 3
        for texts in openings
    )
    assert 0.08 <= habitual / len(openings) <= 0.22  # about 15% habitually ask for reasoning
    # heavy-tailed activity: the busiest tenth sends far more than the median account
    volumes = sorted(len(mine) for mine in accounts.values())
    assert volumes[int(0.9 * len(volumes))] > 2 * statistics.median(volumes)
    assert volumes[-1] > 10 * statistics.median(volumes)


def test_ci_ticks_every_period_within_one_percent_and_repeats_its_suite():
    requests = only("ci_batch", 0.5)
    accounts = by_account(requests)
    assert len(accounts) == 5
    repeated = 0
    for mine in accounts.values():
        gaps = [b.t - a.t for a, b in pairwise(mine)]
        assert max(gaps) / min(gaps) <= 1.01 / 0.99 + 1e-9
        texts = [prompt(r) for r in mine]
        repeated += len(set(texts)) <= len(texts) / 3
    assert repeated >= 3  # the suites; the other two feed one instruction varying documents


def test_eval_harness_loops_over_fifty_prompts_at_night():
    requests = only("eval_harness", 2.0)
    accounts = by_account(requests)
    assert len(accounts) == 3
    for mine in accounts.values():
        texts = [prompt(r) for r in mine]
        assert len(set(texts)) <= 50 < len(texts)
        assert all(r.t % 86400 < 8 * 3600 for r in mine)  # the nightly run ends by 08:00 UTC
    assert any("step by step" in prompt(r) for r in requests)  # a CoT benchmark prompt


def test_campaign_c_blends_a_quarter_of_extraction_into_corporate_work():
    requests = only("campaign_c", 2.0)
    assert len(by_account(requests)) == 5
    assert len({subnet(r.ip) for r in requests}) == 1
    extracting = sum("step" in prompt(r).lower() for r in requests)
    assert 0.15 <= extracting / len(requests) <= 0.35


def test_campaign_d_harvests_without_extraction_phrasing_from_a_shared_proxy_pool():
    requests = only("campaign_d", 2.0, 0.5)
    accounts = by_account(requests)
    assert len(accounts) == 30
    assert len({subnet(r.ip) for r in requests}) <= 100
    assert len({header(r, b"user-agent") for r in requests}) == 1
    for mine in accounts.values():
        assert len({r.ip for r in mine}) >= 3
        assert len(mine) > 150  # more than a person
        hours = {int(r.t % 86400 // 3600) for r in mine}
        assert len(hours) <= 16  # a scripted eight-hour "night"
    assert not any(
        h.lower() in prompt(r).lower() for r in requests for h in prompts.REASONING_HABITS
    )


@pytest.mark.parametrize("name", [p.name for p in populations.POPULATIONS])
def test_every_body_is_an_openai_chat_request(name: str):
    for request in only(name, 0.3, 0.05)[:200]:
        body = json.loads(request.body)
        assert isinstance(body["model"], str)
        assert body["messages"][-1]["role"] == "user"
        assert dict(request.headers)[b"x-account-id"].decode() == request.account
