"""Signals across identities, and cohort escalation: a coordinated cohort raises its members
together, a crowded but honest one (a NAT) raises no one."""

from __future__ import annotations

import random
from typing import Any

from guardrail.signals.engine import Assessment

from .streams import QUESTIONS, START, Driver, diverse, human, templated

Make = Any


async def campaign(
    driver: Driver,
    rng: random.Random,
    *,
    accounts: int,
    ip: str,
    ua: str = "python-requests/2.31",
    rounds: int = 12,
) -> None:
    """Sybil accounts on one /24: steady ticks, templated prompts asking for reasoning."""
    for r in range(rounds):
        for a in range(accounts):
            await driver.send(
                START + r * 20.0 + a * 0.1,
                account=f"sybil-{ip}-{a}",
                ip=ip.format(a % 250 + 1),
                prompt=templated(rng, 1)[0],
                ua=ua,
            )


async def office(
    driver: Driver,
    rng: random.Random,
    *,
    accounts: int,
    ip: str,
    ua: str = "Mozilla/5.0",
    turns: int = 12,
) -> None:
    """People behind one NAT: human timing, their own questions."""
    for a in range(accounts):
        for when, prompt in zip(
            human(rng, turns, START + a * 37.0), diverse(rng, turns), strict=True
        ):
            await driver.send(
                when, account=f"staff-{a}", ip=ip.format(a % 4 + 1), prompt=prompt, ua=ua
            )


async def test_a_coordinated_subnet_raises_a_newcomer_from_its_first_request(
    make_driver: Make,
) -> None:
    rng = random.Random(20)
    driver = await make_driver()
    await campaign(driver, rng, accounts=50, ip="203.0.113.{}")
    newcomer = await driver.send(
        START + 400,
        account="new-sybil",
        ip="203.0.113.77",
        prompt="What is the capital of Australia and why is it not Sydney",
    )
    assert newcomer.signals["subnet_cohort"] >= 25.0
    member = await driver.send(
        START + 401,
        account="sybil-203.0.113.{}-3",
        ip="203.0.113.4",
        prompt=templated(rng, 1)[0],
        ua="python-requests/2.31",
    )
    assert member.threshold is not None and member.score >= 75


async def test_a_nat_of_fifty_honest_accounts_raises_no_one(make_driver: Make) -> None:
    rng = random.Random(21)
    driver = await make_driver()
    await office(driver, rng, accounts=50, ip="192.0.2.{}")
    newcomer = await driver.send(
        START + 7200,
        account="new-staff",
        ip="192.0.2.9",
        prompt="How do I format a table of contents in my thesis please",
    )
    assert "subnet_cohort" not in newcomer.signals
    assert "fingerprint_cohort" not in newcomer.signals
    assert newcomer.score < 50


async def test_a_step_by_step_office_stays_below_the_thresholds(make_driver: Make) -> None:
    """Fifty people behind one NAT who all end prompts with "think step by step"."""
    rng = random.Random(22)
    driver = await make_driver()
    worst = 0.0
    for a in range(50):
        prompts = [p + " Think step by step." for p in diverse(rng, 10)]
        for when, prompt in zip(human(rng, 10, START + a * 41.0), prompts, strict=True):
            assessment = await driver.send(
                when, account=f"student-{a}", ip="192.0.2.8", prompt=prompt, ua="Mozilla/5.0"
            )
            worst = max(worst, assessment.score)
    assert worst < 50


async def test_cross_account_templates(make_driver: Make) -> None:
    rng = random.Random(23)
    driver = await make_driver()
    last = None
    for a in range(20):  # twenty accounts, twenty subnets, one template
        for when, prompt in zip(human(rng, 6, START + a * 60.0), templated(rng, 6), strict=True):
            last = await driver.send(when, account=f"tmpl-{a}", ip=f"198.18.{a}.5", prompt=prompt)
    assert last is not None and last.signals["cross_account_templates"] >= 20.0
    for a in range(20):  # twenty accounts with their own questions
        for when, prompt in zip(human(rng, 6, START + a * 60.0), diverse(rng, 6), strict=True):
            last = await driver.send(when, account=f"own-{a}", ip=f"198.19.{a}.5", prompt=prompt)
    assert "cross_account_templates" not in last.signals


async def test_a_rotating_proxy_pool_is_a_cohort_even_without_templates(make_driver: Make) -> None:
    """Accounts that each hop over many subnets of a shared pool: the pool's subnets see many
    wandering accounts, however human their questions."""
    rng = random.Random(24)
    driver = await make_driver()
    pool = [f"100.{64 + i // 200}.{i % 200}.{rng.randint(1, 254)}" for i in range(12)]
    last = None
    for r in range(12):
        for a in range(40):
            last = await driver.send(
                START + r * 300 + a,
                account=f"harvest-{a}",
                ip=rng.choice(pool),
                prompt=diverse(rng, 1)[0],
                ua="OpenAI/Python 1.51.0",
            )
    assert last is not None
    assert last.signals["network_spread"] >= 10.0
    assert last.signals["subnet_cohort"] >= 15.0
    assert last.signals["fingerprint_cohort"] >= 10.0  # one client build, hopping


async def test_a_fingerprint_shared_by_coordinated_accounts(make_driver: Make) -> None:
    rng = random.Random(25)
    driver = await make_driver()
    for a in range(40):  # forty accounts, each on its own subnet, one scripted client
        for r in range(8):
            await driver.send(
                START + r * 20.0 + a * 0.2,
                account=f"fp-{a}",
                ip=f"198.18.{a}.9",
                prompt=templated(rng, 1)[0],
                ua="farm-client/0.1",
            )
    newcomer = await driver.send(
        START + 400,
        account="fp-new",
        ip="198.19.200.9",
        prompt="What time is it in Tokyo when it is noon in Paris today",
        ua="farm-client/0.1",
    )
    assert newcomer.signals["fingerprint_cohort"] >= 15.0


async def test_a_popular_sdk_fingerprint_is_not_suspicious(make_driver: Make) -> None:
    rng = random.Random(26)
    driver = await make_driver()
    await office(driver, rng, accounts=40, ip="10.{}.0.1", ua="OpenAI/Python 1.51.0")
    newcomer = await driver.send(
        START + 9000,
        account="sdk-new",
        ip="10.9.9.9",
        prompt="Draft a short thank-you note for my neighbour's help",
        ua="OpenAI/Python 1.51.0",
    )
    assert "fingerprint_cohort" not in newcomer.signals


async def test_a_popular_build_a_campaign_drives_passes_nothing_to_strangers(
    make_driver: Make,
) -> None:
    """A campaign on the most common SDK build, each account hopping over a proxy pool,
    sends more than the build's honest users: the cohort is suspect. Its hoppers carry
    it; a stranger on the same build, at home, with a reasoning habit, carries nothing."""
    rng = random.Random(27)
    driver = await make_driver()
    ua = "OpenAI/Python 1.59.6"
    pool = [f"100.{64 + i // 200}.{i % 200}.{rng.randint(1, 254)}" for i in range(60)]
    await office(driver, rng, accounts=20, ip="10.{}.0.1", ua=ua)  # honest users of the build
    hopper = None
    for r in range(12):
        for a in range(30):
            hopper = await driver.send(
                START + 9000 + r * 300 + a,
                account=f"hopper-{a}",
                ip=rng.choice(pool),
                prompt=templated(rng, 1)[0],
                ua=ua,
            )
    assert hopper is not None and hopper.signals["fingerprint_cohort"] >= 10.0
    own = [
        "which houseplants survive a north facing bathroom with almost no daylight at all",
        "how do I stop my bike chain from slipping when I climb hills in the highest gear",
        "what should I pack for a week of hiking in the Dolomites in late September",
        "help me plan a surprise birthday picnic for my sister who hates crowds and wasps",
        "is it worth repairing a twelve year old dishwasher that leaks from the door seal",
        "how can I teach my grandmother to video call without the tablet confusing her",
        "what is a fair way to split rent when one flatmate has the bigger bedroom",
        "why does my homemade bread come out dense even though the dough doubled in size",
        "suggest a reading list for a teenager who loved the hunger games trilogy",
        "how do I politely decline a wedding invitation from an old colleague",
        "which questions should I ask at a parent teacher meeting for a shy nine year old",
        "how long should I let a new cast iron pan cool before I wash it with water",
    ]
    stranger = None
    for when, question in zip(human(rng, 24, START + 9000), own * 2, strict=True):
        stranger = await driver.send(
            when,
            account="stranger",
            ip="73.41.200.9",
            prompt=question + " Think step by step.",
            ua=ua,
        )
    assert stranger is not None
    assert "fingerprint_cohort" not in stranger.signals
    assert stranger.threshold is None


async def test_a_short_one_shot_template_is_indexed_across_accounts(make_driver: Make) -> None:
    """A template whose frame is short ("Problem: {q}. Case n.") sent as a new conversation
    each time by many accounts: near copies across them. The same short turns as follow-ups
    inside conversations (strangers' "ok, and how long would that take?") are not indexed."""
    rng = random.Random(28)
    short = ["how many primes are below fifty", "why does ice float", "what is heapsort"]
    driver = await make_driver()
    last = None
    for r in range(6):
        for a in range(10):
            question = rng.choice(short)
            last = await driver.send(
                START + r * 60 + a,
                account=f"short-{a}",
                ip=f"198.18.{a}.9",
                prompt=f"Problem: {question}. Case {rng.randint(1, 10**6)}.",
            )
    assert last is not None and last.signals["cross_account_templates"] >= 10.0
    chat = await make_driver()
    follow = None
    for r in range(6):
        for a in range(10):
            body = {
                "messages": [
                    {"role": "user", "content": diverse(rng, 1)[0]},
                    {"role": "assistant", "content": "..."},
                    {"role": "user", "content": f"ok and how long would that take? {r}{a}"},
                ]
            }
            follow = await chat.send(
                START + r * 60 + a, account=f"person-{a}", ip=f"198.18.{a}.9", body=body
            )
    assert follow is not None and "cross_account_templates" not in follow.signals


#: The hydra's way: one instruction around a new problem each time, a quarter of a team's work.
FRAMES = (
    "For our internal training material, reason step by step through this and include every "
    "intermediate step: {q}",
    "{q} Explain in detail, step by step, how you would arrive at the answer; we compare it "
    "with ours.",
)


def framed(rng: random.Random, n: int) -> list[str]:
    """Extraction in one of FRAMES, each around a problem that is new every time."""
    return [
        rng.choice(FRAMES).format(q=f"{rng.choice(QUESTIONS)} for n = {rng.randint(2, 10**6)}?")
        for _ in range(n)
    ]


async def team(
    driver: Driver, rng: random.Random, prompts: list[list[str]], ips: list[str]
) -> list[Assessment]:
    """Accounts taking turns at human pace, account ``a`` on ``ips[a]``, sending
    ``prompts[a]``; returns each one's last assessment."""
    last: list[Assessment] = []
    for a, (mine, ip) in enumerate(zip(prompts, ips, strict=True)):
        times = human(rng, len(mine), START + a * 13.0)
        last.append(await driver.stream(times, mine, account=f"member-{a}", ip=ip))
    return last


def mixed(rng: random.Random, n: int) -> list[str]:
    """Ordinary work, with extraction in a shared frame every fourth prompt."""
    work, asks = diverse(rng, n), framed(rng, n // 4)
    return [asks[i // 4] if i % 4 == 3 else work[i] for i in range(n // 4 * 4)]


async def test_a_team_filling_one_instruction_on_one_network_shares_its_frames(
    make_driver: Make,
) -> None:
    """Five accounts of one office, a quarter of whose prompts put a new problem in one of
    two extraction frames: each account's requests for reasoning are in frames its colleagues
    send, and the signal is at full strength for every one of them."""
    rng = random.Random(30)
    driver = await make_driver()
    # one office's working hours: each account's turn comes while the others' are recent
    last: dict[int, Assessment] = {}
    prompts = [mixed(rng, 96) for _ in range(5)]
    hours = human(rng, 96)
    order = sorted((t + a * 13.0, a, i) for a in range(5) for i, t in enumerate(hours))
    for when, a, i in order:
        last[a] = await driver.send(
            when, account=f"member-{a}", ip=f"198.51.100.{a % 3 + 2}", prompt=prompts[a][i]
        )
    for assessment in last.values():
        assert assessment.signals["shared_frames"] == 40.0


async def test_one_frame_from_strangers_on_other_networks_is_not_shared(
    make_driver: Make,
) -> None:
    """The same instruction from accounts on five different networks: a popular way of
    asking, or a campaign that the cross-account index and the cohorts must catch instead."""
    rng = random.Random(31)
    driver = await make_driver()
    last = await team(
        driver, rng, [framed(rng, 24) for _ in range(5)], [f"198.18.{a}.5" for a in range(5)]
    )
    assert all("shared_frames" not in assessment.signals for assessment in last)


async def test_a_household_with_one_habit_shares_no_frame(make_driver: Make) -> None:
    """Three people at one address who all close their own questions with the same phrase: the
    phrase's frame takes in the end of each question, which is theirs alone."""
    rng = random.Random(32)
    driver = await make_driver()
    habit = [[f"{q}? Let's think step by step." for q in diverse(rng, 40)] for _ in range(3)]
    last = await team(driver, rng, habit, ["192.0.2.8"] * 3)
    assert all(assessment.signals["reasoning_extraction"] == 20.0 for assessment in last)
    assert all("shared_frames" not in assessment.signals for assessment in last)


async def test_students_pasting_one_assignment_share_no_frame(make_driver: Make) -> None:
    """A class behind one NAT pasting the same assignment questions, which ask for the
    working: copies of one text are not a frame filled in."""
    rng = random.Random(33)
    driver = await make_driver()
    sheet = [f"Exercise {i}: {q}. Show your working step by step." for i, q in enumerate(QUESTIONS)]
    last = await team(driver, rng, [rng.sample(sheet, 10) for _ in range(8)], ["192.0.2.9"] * 8)
    assert all("shared_frames" not in assessment.signals for assessment in last)
