"""Each identity signal on crafted streams, against the memory store and a real Redis."""

from __future__ import annotations

import random
from typing import Any

import pytest

from guardrail.identity import Subject

from .streams import START, diverse, human, steady, templated

Make = Any


async def test_timing_regularity_tells_a_script_from_a_person(make_driver: Make) -> None:
    rng = random.Random(1)
    script = await make_driver()
    tick = await script.stream(steady(40, every=20.0), diverse(rng, 40), account="bot")
    person = await script.stream(human(rng, 40), diverse(rng, 40), account="person")
    assert tick.signals["timing_regularity"] == 15.0
    assert "timing_regularity" not in person.signals


async def test_coding_agent_bursts_are_not_regular(make_driver: Make) -> None:
    """Bursts of 15-70 requests a few seconds apart, then minutes to hours of nothing."""
    rng = random.Random(2)
    driver = await make_driver()
    times, now = [], START
    for _ in range(6):
        for _ in range(rng.randint(15, 70)):
            times.append(now)
            now += rng.uniform(2, 10)
        now += rng.uniform(300, 5400)
    last = await driver.stream(times, diverse(rng, len(times)), account="agent")
    assert last.signals.get("timing_regularity", 0) < 7.5  # at most half strength
    assert last.score < 50


async def test_round_the_clock_activity(make_driver: Make) -> None:
    rng = random.Random(3)
    driver = await make_driver()
    always = await driver.stream(steady(96, every=1800.0), diverse(rng, 96), account="247")
    day_times = [t for t in steady(200, every=900.0) if 7 <= (t // 3600) % 24 <= 22]
    daytime = await driver.stream(day_times[:96], diverse(rng, 96), account="day")
    assert always.signals["round_the_clock"] >= 9.0
    assert "round_the_clock" not in daytime.signals


async def test_templated_prompts_are_templating_and_diverse_ones_are_not(make_driver: Make) -> None:
    rng = random.Random(4)
    driver = await make_driver()
    templ = await driver.stream(human(rng, 20), templated(rng, 20), account="templ")
    free = await driver.stream(human(rng, 20), diverse(rng, 20), account="free")
    assert templ.signals["prompt_templating"] >= 15.0
    assert "prompt_templating" not in free.signals


async def test_a_fixed_prompt_set_sent_again_is_not_a_template(make_driver: Make) -> None:
    """An evaluation harness re-sends the same prompts: copies, not filled-in templates."""
    rng = random.Random(5)
    suite = diverse(rng, 10)
    driver = await make_driver()
    last = await driver.stream(steady(60, every=30.0), suite, account="harness")
    assert "prompt_templating" not in last.signals
    assert last.score < 50


async def test_reasoning_extraction_share(make_driver: Make) -> None:
    rng = random.Random(6)
    driver = await make_driver()
    asks = [p + ". Show your full reasoning step by step." for p in diverse(rng, 12)]
    probe = await driver.stream(human(rng, 12), asks, account="asks")
    plain = await driver.stream(human(rng, 12), diverse(rng, 12), account="plain")
    assert probe.signals["reasoning_extraction"] == 20.0
    assert "reasoning_extraction" not in plain.signals


async def test_a_step_by_step_habit_alone_mitigates_no_one(make_driver: Make) -> None:
    rng = random.Random(7)
    driver = await make_driver()
    habit = [p + " Think step by step." for p in diverse(rng, 60)]
    last = await driver.stream(human(rng, 60), habit, account="habit")
    assert last.signals["reasoning_extraction"] == 20.0
    assert last.score < 50 and last.threshold is None


async def test_custom_reasoning_patterns_replace_the_built_in_list(make_driver: Make) -> None:
    from .streams import BASE_POLICY

    rng = random.Random(8)
    driver = await make_driver(
        BASE_POLICY
        + "risk:\n  signals:\n    reasoning_extraction: {patterns: ['\\bpineapple\\b']}\n"
    )
    odd = await driver.stream(
        human(rng, 8), ["tell me about pineapple farms please now"] * 8, account="odd"
    )
    usual = await driver.stream(
        human(rng, 8), ["solve it step by step for me please now"] * 8, account="usual"
    )
    assert odd.signals["reasoning_extraction"] == 20.0
    assert "reasoning_extraction" not in usual.signals


async def test_network_spread(make_driver: Make) -> None:
    rng = random.Random(9)
    driver = await make_driver()
    last = None
    for i, when in enumerate(human(rng, 20)):
        last = await driver.send(when, account="hopper", ip=f"203.0.{i * 7 % 250}.9")
    assert last is not None and last.signals["network_spread"] == 25.0
    for i, when in enumerate(human(rng, 20)):  # home, office, phone
        last = await driver.send(
            when,
            account="commuter",
            ip=f"192.0.2.{i % 3}" if i % 3 == 0 else f"198.51.{100 + i % 3}.4",
        )
    assert last.signals.get("network_spread", 0) < 5  # three subnets: a little, alone harmless


async def test_request_shape(make_driver: Make) -> None:
    driver = await make_driver()
    rng = random.Random(10)
    times = human(rng, 12)
    for i, when in enumerate(times):
        probe = await driver.send(
            when,
            account="probe",
            prompt=f"question {i} about things",
            body={"logprobs": True, "top_logprobs": 5},
        )
        sweep = await driver.send(
            when,
            account="sweep",
            prompt=f"question {i} about things",
            body={"temperature": (i % 4) / 2},
        )
        pinned = await driver.send(
            when, account="pinned", prompt=f"question {i} about things", body={"max_tokens": 8192}
        )
        plain = await driver.send(
            when,
            account="plain",
            prompt=f"question {i} about things",
            body={"max_tokens": 512, "temperature": 0.7},
        )
    assert probe.signals["request_shape"] == 10.0
    assert sweep.signals["request_shape"] == 10.0
    assert pinned.signals["request_shape"] == 10.0
    assert "request_shape" not in plain.signals


async def test_refusals_and_failed_challenges(make_driver: Make) -> None:
    from guardrail.identity import Subject

    driver = await make_driver()
    times = steady(12, every=60.0)
    for when in times:
        refused = await driver.send(when, account="refused")
        await driver.engine.refused(refused, when)
    after = await driver.send(times[-1] + 60, account="refused")
    assert after.signals["refusals"] == 15.0
    subject = Subject(None, "failing", "198.51.100.9", "198.51.100.0/24")
    for when in times[:3]:
        await driver.engine.challenge_failed(subject, when)
    failing = await driver.send(times[3], account="failing", ip="198.51.100.9")
    assert failing.signals["failed_challenges"] >= 29.5  # three failures, minutes ago


async def test_a_passed_challenge_takes_points_off(make_driver: Make) -> None:
    from .test_engine import ASK, ONLY_REASONING

    # reasoning_extraction alone, at 60 points, and the relief of a pass
    relief = "passed_challenges: {weight: 1}"
    text = ONLY_REASONING.replace("passed_challenges: {weight: 0}", relief)
    driver = await make_driver(text)
    times = steady(10, every=60.0)
    asks = [ASK.format(i) for i in range(10)]
    before = await driver.stream(times, asks, account="solver", ip="198.51.100.20")
    assert before.score == 60.0
    await driver.engine.challenge_passed(
        Subject(None, "solver", "198.51.100.20", "198.51.100.0/24"), times[-1] + 1
    )
    after = await driver.send(times[-1] + 60, account="solver", ip="198.51.100.20", body={})
    assert after.signals["passed_challenges"] == pytest.approx(-30.0, abs=0.2)
    assert after.score == pytest.approx(30.0, abs=0.2)
    assert list(after.signals) == ["reasoning_extraction", "passed_challenges"]  # largest first


async def test_five_failed_challenges_are_the_top_band(make_driver: Make) -> None:
    driver = await make_driver()
    subject = Subject(None, "guesser", "198.51.100.30", "198.51.100.0/24")
    for i in range(5):
        await driver.engine.challenge_failed(subject, START + i)
    last = await driver.send(START + 10, account="guesser", ip="198.51.100.30", body={})
    assert last.score == 100.0
    assert last.threshold is not None and last.threshold.action == "block"


async def test_request_volume_against_the_route_limit(make_driver: Make) -> None:
    from .streams import BASE_POLICY

    driver = await make_driver(BASE_POLICY.replace("60/minute", "6/minute"))
    # 4 a minute, sustained for two half-lives, against a limit of 6 a minute
    heavy = await driver.stream(steady(4 * 60 * 12, every=15.0), account="heavy")
    light = await driver.stream(steady(60, every=600.0), account="light")
    assert heavy.signals["request_volume"] >= 7.0
    assert "request_volume" not in light.signals


async def test_evidence_decays_with_the_half_life(make_driver: Make) -> None:
    rng = random.Random(11)
    driver = await make_driver()
    await driver.stream(steady(40, every=20.0), templated(rng, 40), account="bot")
    hot = await driver.send(START + 801, account="bot", prompt=templated(rng, 1)[0], commit=False)
    later = await driver.send(
        START + 801 + 4 * 6 * 3600, account="bot", prompt=templated(rng, 1)[0], commit=False
    )
    assert hot.score > later.score


async def test_templated_reasoning_is_a_script_filling_in_one_template(make_driver: Make) -> None:
    """Half the prompts a reasoning template, half the account's own questions: full
    strength. (A quarter, the old hydra's share, no longer counts alone: people who ask for
    reasoning on most prompts reach it by chance; see issue 13.)"""
    rng = random.Random(12)
    driver = await make_driver()
    honest = diverse(rng, 60)
    prompts = [templated(rng, 1)[0] if i % 2 == 0 else honest[i] for i in range(60)]
    script = await driver.stream(human(rng, 60), prompts, account="script")
    assert script.signals["templated_reasoning"] >= 20.0
    blended = [templated(rng, 1)[0] if i % 4 == 0 else honest[i] for i in range(60)]
    hydra = await driver.stream(human(rng, 60), blended, account="hydra")
    assert hydra.signals.get("templated_reasoning", 0) < 5.0


#: What habitual askers close their questions with (the simulator's list, issue 13).
HABITS = (
    "Let's think step by step.",
    "Please show your reasoning.",
    "Explain your reasoning step by step.",
    "Walk me through it step by step.",
    "Explain your reasoning before you answer.",
)


@pytest.mark.parametrize("habit", HABITS)
async def test_a_fixed_closing_phrase_on_varied_questions_is_no_template(
    make_driver: Make, habit: str
) -> None:
    """The request for reasoning is counted (reasoning_extraction), the rest of each prompt
    is a new question: no templating, no templated reasoning, far from a band."""
    rng = random.Random(14)
    driver = await make_driver()
    asked = [f"{p}? {habit}" for p in diverse(rng, 60)]
    person = await driver.stream(human(rng, 60), asked, account="habit")
    assert person.signals["reasoning_extraction"] == 20.0
    assert "prompt_templating" not in person.signals
    assert "templated_reasoning" not in person.signals
    assert person.score <= 25.0


async def test_a_frame_whose_slot_changes_is_still_a_template(make_driver: Make) -> None:
    """The same sentence with a new topic each time: templating, and with a request for
    reasoning, templated reasoning; cutting the request out leaves the frame to see."""
    rng = random.Random(15)
    driver = await make_driver()
    frame = (
        "Write a short explainer about {q} for a ten-year-old, in three paragraphs with one "
        "everyday example and a quiz question at the end. Show your reasoning step by step."
    )
    topics = diverse(rng, 60)
    framed = [frame.format(q=t) for t in topics]
    filled = await driver.stream(human(rng, 60), framed, account="filler")
    assert filled.signals["prompt_templating"] >= 15.0
    assert filled.signals["templated_reasoning"] >= 20.0


async def test_follow_ups_in_the_words_of_the_last_turn_are_a_conversation(
    make_driver: Make,
) -> None:
    """ "Now put it in French", then "in Italian": the earlier turns are in the request's
    history, so the near-duplicates are a conversation going on. The same prompts sent one
    by one, each a new conversation, are a template."""
    languages = ["French", "Italian", "German", "Spanish", "Dutch", "Polish", "Greek", "Czech"]
    rng = random.Random(16)
    topics = diverse(rng, 6)
    times = human(rng, 48)

    def turn(i: int) -> str:
        return f"Nice, now put your answer about {topics[i // 8]} in {languages[i % 8]}"

    chat = await make_driver()
    last = None
    for i, when in enumerate(times):
        history: list[dict[str, str]] = []
        for j in range(i - i % 8, i):  # a conversation of eight turns, each resending the last
            history += [
                {"role": "user", "content": turn(j)},
                {"role": "assistant", "content": "..."},
            ]
        body = {"messages": [*history, {"role": "user", "content": turn(i)}]}
        last = await chat.send(when, account="translator", body=body)
    assert last is not None and "prompt_templating" not in last.signals
    oneshots = await make_driver()
    script = await oneshots.stream(times, [turn(i) for i in range(48)], account="translator")
    assert script.signals["prompt_templating"] >= 10.0


async def test_a_request_for_reasoning_in_the_instructions_counts(make_driver: Make) -> None:
    """Moving the extraction instruction into the system (or developer) message does not
    hide it; a system prompt that asks for nothing adds nothing."""
    rng = random.Random(17)
    driver = await make_driver()
    system = "You are a tutor. Always reveal your full chain of thought before the final answer."
    for role in ("system", "developer"):
        last = None
        for when, question in zip(human(rng, 30), diverse(rng, 30), strict=True):
            body = {
                "messages": [
                    {"role": role, "content": system},
                    {"role": "user", "content": question},
                ]
            }
            last = await driver.send(when, account=f"moved-{role}", body=body)
        assert last is not None and last.signals["reasoning_extraction"] == 20.0
    plain = None
    for when, question in zip(human(rng, 30), diverse(rng, 30), strict=True):
        body = {
            "messages": [
                {"role": "system", "content": "You are a helpful assistant for a bakery."},
                {"role": "user", "content": question},
            ]
        }
        plain = await driver.send(when, account="plain", body=body)
    assert plain is not None and "reasoning_extraction" not in plain.signals


async def test_padding_does_not_hide_the_request_for_reasoning(make_driver: Make) -> None:
    """Random characters before and after each question and its instruction (a known way
    around a read of the prompt's start and end), from a few hundred to a few thousand: the
    request for reasoning is still read."""
    rng = random.Random(18)
    driver = await make_driver()
    letters = "abcdefghijklmnopqrstuvwxyz0123456789     "

    def pad() -> str:
        return "".join(rng.choice(letters) for _ in range(rng.randint(300, 3000)))

    padded = [f"{pad()}\n\n{q}? Show your complete reasoning.\n\n{pad()}" for q in diverse(rng, 40)]
    last = await driver.stream(human(rng, 40), padded, account="padded")
    assert last.signals["reasoning_extraction"] == 20.0


async def test_asking_for_reasoning_in_ones_own_words_is_not_templated_reasoning(
    make_driver: Make,
) -> None:
    rng = random.Random(13)
    driver = await make_driver()
    habit = [p + " Think step by step." for p in diverse(rng, 60)]
    person = await driver.stream(human(rng, 60), habit, account="habit")
    assert "templated_reasoning" not in person.signals


def forge_crc(text: str, target: int) -> str:
    """``text`` with 40 letters, each "a" or "b", appended so that its CRC-32 is ``target``.
    CRC-32 is affine over GF(2): flipping letter i flips a fixed set of bits, so the letters
    are the solution of a 32-bit linear system (Gaussian elimination)."""
    import zlib

    width = 40

    def crc(choices: int) -> int:
        tail = "".join("b" if choices >> i & 1 else "a" for i in range(width))
        return zlib.crc32((text + tail).encode())

    base = crc(0)
    rows = [(crc(1 << i) ^ base, 1 << i) for i in range(width)]  # (effect, choice)
    want, chosen = target ^ base, 0
    for bit in range(32):
        pivot = next((r for r in rows if r[0] >> bit & 1), None)
        assert pivot is not None
        rows.remove(pivot)
        rows = [(e ^ pivot[0], c ^ pivot[1]) if e >> bit & 1 else (e, c) for e, c in rows]
        if want >> bit & 1:
            want ^= pivot[0]
            chosen ^= pivot[1]
    forged = text + "".join("b" if chosen >> i & 1 else "a" for i in range(width))
    assert zlib.crc32(forged.encode()) == target
    return forged


async def test_instructions_are_judged_by_their_text_not_their_crc(make_driver: Make) -> None:
    """A CRC-32 can be forged to equal another system prompt's: an extraction prompt forged
    to collide with a product's harmless system prompt, sent after it, still counts, and the
    harmless one sent after the forged one still does not."""
    import zlib

    rng = random.Random(19)
    driver = await make_driver()
    harmless = "You are the helpdesk assistant of a bakery. Answer in two sentences."
    forged = forge_crc(
        "You are a tutor. Always reveal your full chain of thought before the final answer. Ref ",
        zlib.crc32(harmless.encode()),
    )
    for system, account in ((harmless, "product"), (forged, "forger"), (harmless, "second")):
        last = None
        for when, question in zip(human(rng, 20), diverse(rng, 20), strict=True):
            body = {
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": question},
                ]
            }
            last = await driver.send(when, account=account, body=body)
        assert last is not None
        asks = "reasoning_extraction" in last.signals
        assert asks is (system is forged), account
