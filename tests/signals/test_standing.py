"""Requests decided from a principal's standing (the memory store): folded into the state as a
full assessment would fold them, and never instead of one that could change the decision."""

from __future__ import annotations

from typing import Any

from guardrail.backends import risk_engine, storage_from_uri
from guardrail.limits import compile_route
from guardrail.policy import Policy
from guardrail.signals import features, sketch
from guardrail.signals.engine import Assessment
from guardrail.signals.state import C_REQ, C_WAN, Keys, RiskStore

from .streams import BASE_POLICY, START, TOPICS, Driver
from .test_engine import ASK, ONLY_REASONING

Make = Any


async def memory_driver(policy_text: str = BASE_POLICY, rescore_after: float = 1.0) -> Driver:
    policy = Policy.from_string(policy_text)
    storage = storage_from_uri("memory://")
    engine = risk_engine(policy, storage, fallback=False)
    engine.rescore_after = rescore_after
    return Driver(engine, compile_route(policy.routes[0]))


def full(assessment: Assessment) -> bool:
    """Was ``assessment`` a full one (scored signal by signal)?"""
    return assessment.values is not None


async def test_a_recent_assessment_decides_the_next_requests_in_memory_only(
    make_driver: Make,
) -> None:
    driver = await make_driver()
    local = driver.engine._local is not None
    times = [START + 0.25 * i for i in range(9)]  # two seconds of requests
    sent = [await driver.send(t, account="steady", body={"temperature": 0.7}) for t in times]
    kinds = [full(a) for a in sent]
    if local:
        # Assessed at 0 s; decided from that at 0.25-0.75 s; assessed again at 1 s, and so on
        assert kinds == [True, False, False, False, True, False, False, False, True]
        assert all(a.score == sent[0].score for a in sent[1:4])
        assert sent[1].signals == {} and sent[1].threshold is None
    else:  # a shared store has no standing to read without a round trip
        assert all(kinds)


async def test_folded_requests_leave_the_state_a_full_assessment_leaves() -> None:
    folding = await memory_driver(rescore_after=1.0)
    assessing = await memory_driver(rescore_after=0.0)  # every request assessed in full
    steps = []
    for i in range(60):  # bursts within a second, pauses, two networks, a new max_tokens
        steps.append(
            (
                START + i * 0.3 + (i // 10) * 40,
                "198.51.100.7" if i % 7 else "203.0.113.9",
                {"temperature": 0.7, "max_tokens": 256 if i < 30 else 512},
                TOPICS[i % len(TOPICS)] if i % 3 == 0 else None,  # diverse prompts between
            )
        )
    kinds = []
    for driver in (folding, assessing):
        for when, ip, body, prompt in steps:
            sent = await driver.send(when, account="burst", ip=ip, body=body, prompt=prompt)
            kinds.append((driver is folding, full(sent), prompt is not None))
    assert (True, False, True) in kinds and (True, False, False) in kinds  # both kinds folded
    assert all(was_full for folds, was_full, _ in kinds if not folds)
    end = steps[-1][0]
    stores: list[RiskStore] = [folding.engine.store, assessing.engine.store]
    client = [(b"user-agent", b"test-client/1.0"), (b"content-type", b"application/json")]
    sketched = sketch.sketch(TOPICS[0])
    assert sketched is not None
    keys = Keys(
        "a:burst",
        "s:198.51.100.0/24",
        features.fingerprint({"headers": client}),
        sketched.buckets(),  # the index buckets of the first prompt
    )
    folded, assessed = [await store.load(keys, end) for store in stores]
    assert folded.principal == assessed.principal
    assert folded.ring == assessed.ring and folded.neighbours == assessed.neighbours
    assert len(folded.ring) == 8
    assert (folded.last_seen, folded.last_max_tokens, folded.last_temperature) == (
        assessed.last_seen,
        assessed.last_max_tokens,
        assessed.last_temperature,
    )
    assert (folded.spread, folded.subnet_members, folded.fingerprint_members) == (
        assessed.spread,
        assessed.subnet_members,
        assessed.fingerprint_members,
    )
    # A folded request adds the standing's behaviour score to its cohorts, not a fresh one:
    # the rest of the cohort counters are the same.
    for cohort in ("subnet", "fingerprint"):
        for index in (C_REQ, C_WAN):
            assert getattr(folded, cohort)[index] == getattr(assessed, cohort)[index]


async def test_a_principal_in_a_band_is_assessed_on_every_request() -> None:
    driver = await memory_driver(ONLY_REASONING)
    asks = [ASK.format(i) for i in range(10)]
    last = await driver.stream([START + 60 * i for i in range(10)], asks, account="asker")
    assert last.threshold is not None and last.threshold.action == "throttle"
    for i in range(1, 5):  # then requests a fraction of a second apart
        again = await driver.send(START + 540 + 0.1 * i, account="asker", body={})
        assert full(again) and again.threshold is not None
        assert again.signals == {"reasoning_extraction": 60.0}


async def test_an_extraction_shaped_request_is_assessed_in_full() -> None:
    driver = await memory_driver()
    await driver.send(START, account="prober", body={"temperature": 0.7})
    plain = await driver.send(START + 0.1, account="prober", body={"temperature": 0.7})
    probe = await driver.send(START + 0.2, account="prober", body={"logprobs": True})
    assert not full(plain)
    assert full(probe)


async def test_an_analysed_prompt_is_folded_unless_it_shows_something() -> None:
    driver = await memory_driver()
    await driver.send(START, account="writer", prompt=TOPICS[0])
    plain = await driver.send(START + 0.1, account="writer", prompt=TOPICS[1])
    asks = await driver.send(START + 0.2, account="writer", prompt=TOPICS[2] + ", step by step")
    again = await driver.send(START + 0.3, account="writer", prompt=TOPICS[1] + " now")
    assert not full(plain)  # compared with its ring and the index, found nothing: folded
    assert full(asks)  # asks for reasoning: evidence, assessed in full
    assert full(again)  # a near-duplicate of one of its own
    snap = await driver.engine.store.load(again.keys, START + 1)
    assert len(snap.ring) == 4  # every analysed prompt's sketch kept, folded or not


async def test_a_request_from_a_new_network_is_assessed_in_full() -> None:
    driver = await memory_driver()
    await driver.send(START, account="hopper", body={})
    home = await driver.send(START + 0.1, account="hopper", body={})
    away = await driver.send(START + 0.2, account="hopper", ip="203.0.113.5", body={})
    back = await driver.send(START + 0.3, account="hopper", ip="203.0.113.9", body={})
    assert not full(home) and full(away)  # network_spread may have moved
    assert not full(back)  # the same /24 again: no longer new


async def test_a_folded_prompt_enters_the_template_index_only_once_admitted() -> None:
    driver = await memory_driver()
    await driver.send(START, account="writer", prompt=TOPICS[0])
    refused = await driver.send(START + 0.1, account="writer", prompt=TOPICS[1], commit=False)
    assert not full(refused) and refused.template is not None
    await driver.engine.commit(refused, admitted=False)
    snap = await driver.engine.store.load(refused.keys, START + 0.2)
    assert snap.neighbours == [] and len(snap.ring) == 2  # its own ring: it is there
    admitted = await driver.send(START + 0.3, account="writer", prompt=TOPICS[1], commit=False)
    await driver.engine.commit(admitted)
    snap = await driver.engine.store.load(admitted.keys, START + 0.4)
    assert snap.neighbours == [admitted.template] * len(admitted.keys.templates)  # each bucket
