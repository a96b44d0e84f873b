"""Scoring, explanations, weights, allow-listing and hysteresis."""

from __future__ import annotations

import random
from typing import Any

import pytest

from guardrail.identity import Subject
from guardrail.policy import Policy
from guardrail.signals.catalog import SIGNALS
from guardrail.signals.engine import RiskEngine, principal_of
from guardrail.signals.state import C_REQ, PRINCIPAL, REF, REQ, Band, Update

from .streams import BASE_POLICY, START, human, steady, templated

Make = Any
ONLY_REASONING = (
    BASE_POLICY
    + """
risk:
  signals:
"""
    + "".join(
        f"    {s.name}: {{weight: {3.0 if s.name == 'reasoning_extraction' else 0}}}\n"
        for s in SIGNALS
    )
)
ASK = "Please answer this and show your full reasoning, question number {}"


@pytest.mark.parametrize(
    ("subject", "principal"),
    [
        (Subject("k:" + "a" * 32, "acct", "192.0.2.1", "192.0.2.0/24"), "a:acct"),
        (Subject("k:" + "a" * 32, None, "192.0.2.1", "192.0.2.0/24"), "k:" + "a" * 32),
        (Subject(None, None, "192.0.2.1", "192.0.2.0/24"), "i:192.0.2.1"),
        # a keyless IPv6 client is its network: it can rotate addresses inside it at will
        (Subject(None, None, "2001:db8::9", "2001:db8::/48", "2001:db8::/64"), "i:2001:db8::/64"),
    ],
)
def test_principal(subject: Subject, principal: str) -> None:
    assert principal_of(subject) == principal


def test_no_signal_alone_reaches_the_lowest_example_threshold() -> None:
    assert all(signal.points < 50 for signal in SIGNALS)


async def test_the_score_is_the_sum_of_its_explanations(make_driver: Make) -> None:
    rng = random.Random(30)
    driver = await make_driver()
    last = await driver.stream(steady(30), templated(rng, 30), account="bot")
    assert last.signals, "a templated script must show evidence"
    assert list(last.signals.values()) == sorted(last.signals.values(), reverse=True)
    assert last.score == pytest.approx(min(100.0, sum(last.signals.values())), abs=0.6)


async def test_weights_scale_and_zero_disables(make_driver: Make) -> None:
    rng = random.Random(31)
    driver = await make_driver(ONLY_REASONING)
    asks = [ASK.format(i) for i in range(10)]
    last = await driver.stream(human(rng, 10), asks, account="asker")
    assert last.signals == {"reasoning_extraction": 60.0}
    assert last.threshold is not None and last.threshold.action == "throttle"


async def test_allow_listed_subjects_are_exempt() -> None:
    policy = Policy.from_string(
        BASE_POLICY + "allow: {accounts: [partner], cidrs: [192.0.2.0/24]}\n"
    )
    engine = RiskEngine(policy, store=None)  # type: ignore[arg-type]
    assert engine.exempt(Subject(None, "partner", "198.51.100.1", "198.51.100.0/24"))
    assert engine.exempt(Subject(None, "other", "192.0.2.77", "192.0.2.0/24"))
    assert not engine.exempt(Subject(None, "other", "198.51.100.1", "198.51.100.0/24"))


# -- hysteresis ------------------------------------------------------------------------------


def bands() -> RiskEngine:
    return RiskEngine(Policy.from_string(BASE_POLICY), store=None)  # type: ignore[arg-type]


def test_a_subject_rises_into_a_band_at_once() -> None:
    engine = bands()
    assert engine._band(49.9, None, START) == (0, None)
    assert engine._band(50.0, None, START) == (1, Band(1, START))
    assert engine._band(96.0, Band(1, START), START + 1) == (3, Band(3, START + 1))


def test_it_stays_within_the_margin_and_the_hold_renews() -> None:
    engine = bands()  # throttle at 50, margin 10, cooldown 15 minutes
    assert engine._band(41.0, Band(1, START), START + 3600) == (1, Band(1, START + 3600))


def test_it_leaves_only_after_the_cooldown_below_the_exit_line() -> None:
    engine = bands()
    held = Band(1, START)
    assert engine._band(39.0, held, START + 899) == (1, None)  # below the line, cooling down
    assert engine._band(39.0, held, START + 900) == (0, Band(0, START + 900))


def test_from_challenge_it_steps_down_to_the_band_its_score_is_in() -> None:
    engine = bands()
    assert engine._band(55.0, Band(2, START), START + 900) == (1, Band(1, START + 900))


async def test_a_band_this_policy_no_longer_has_is_left_at_once(make_driver: Make) -> None:
    """A band is written with its hold, the cooldown, which a store several workers share
    keeps it for against a lower one. A reload that removed a threshold leaves principals in a
    band past the list: they count as in none, and what is written instead holds nothing
    against it (Redis would keep the old band for the cooldown, and every request would write
    the new one again)."""
    driver = await make_driver()
    first = await driver.send(START, account="asker", prompt=ASK.format(1))
    assert first.update.hold == 900.0
    gone = Update(START, [0.0] * len(PRINCIPAL), seen=False, band=Band(9, START))
    await driver.engine.store.save(first.keys, gone)
    later = await driver.send(START + 5, account="asker", prompt=ASK.format(2))
    assert later.threshold is None
    assert later.update.band == Band(0, START + 5) and later.update.hold == 0.0
    assert (await driver.engine.store.load(first.keys, START + 5)).band == Band(0, START + 5)


async def test_hysteresis_holds_in_the_store(make_driver: Make) -> None:
    """Throttled at 60 points; the evidence decays under 50 but not under 40: still throttled,
    and only 15 minutes after dropping under 40 does the subject go free."""
    rng = random.Random(32)
    driver = await make_driver(ONLY_REASONING)
    asks = [ASK.format(i) for i in range(10)]
    times = human(rng, 10)
    hot = await driver.stream(times, asks, account="asker")
    assert hot.threshold is not None
    # Plain prompts dilute the share of reasoning requests: send them until under 50.
    now, last = times[-1], hot
    while last.score >= 50:
        now += 60
        last = await driver.send(
            now, account="asker", prompt=f"hello there, a plain question {now}"
        )
    assert last.threshold is not None and last.threshold.action == "throttle"
    while last.score >= 40:
        now += 60
        last = await driver.send(
            now, account="asker", prompt=f"hello there, a plain question {now}"
        )
    assert last.threshold is not None  # under the exit line, cooling down
    dropped = now
    while now - dropped < 900:
        now += 120
        last = await driver.send(
            now, account="asker", prompt=f"hello there, a plain question {now}"
        )
    assert last.threshold is None and last.score < 40


def test_after_the_cooldown_it_steps_down_to_the_highest_band_it_still_holds() -> None:
    engine = bands()  # throttle 50, challenge 75, block 95; margin 10
    assert engine._band(70.0, Band(3, START), START + 900) == (2, Band(2, START + 900))
    assert engine._band(50.0, Band(3, START), START + 900) == (1, Band(1, START + 900))


async def test_a_refused_request_buys_no_state(make_driver: Make) -> None:
    """Only a request the limits admit creates its principal; a refused one counts in its
    subnet, and on a principal already there (issue 11: random keys evicted everyone)."""
    driver = await make_driver()
    store = driver.engine.store
    refused = await driver.send(START, account="random-1", prompt=ASK.format(1), commit=False)
    assert not refused.known
    await driver.engine.commit(refused, admitted=False)
    await driver.engine.refused(refused, START)
    snap = await store.load(refused.keys, START + 1)
    assert not snap.known and snap.ring == [] and snap.principal[REF] == 0.0
    assert snap.subnet[C_REQ] > 0  # the network's cohort saw it
    assert (snap.fingerprint[C_REQ], snap.neighbours) == (0.0, [])  # no cohort, no bucket

    admitted = await driver.send(START + 2, account="random-1", prompt=ASK.format(2))
    assert not admitted.known  # committed as admitted: created
    again = await driver.send(START + 4, account="random-1", commit=False)
    assert again.known
    await driver.engine.commit(again, admitted=False)
    await driver.engine.refused(again, START + 4)
    snap = await store.load(again.keys, START + 5)
    assert snap.known and snap.principal[REQ] > 1.9 and snap.principal[REF] > 0.9
