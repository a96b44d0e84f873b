"""The building blocks of a simulated account: where it connects from, how it writes, and the
two shapes of traffic (conversations that resend their history, and one-shot requests).

Population definitions (populations.py) combine these; each account generator is lazy and
owns its ``random.Random``, so accounts can be merged in any number without affecting
each other.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from guardrail.simulate import machine_text, prompts
from guardrail.simulate.clients import Headers
from guardrail.simulate.timing import is_weekend, local_hour
from guardrail.simulate.traffic import Conversation, SimRequest, single

MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1", "o4-mini")


class Addresses:
    """Where an account connects from: one address per session (``sticky``), or a fresh one
    from ``ips`` for every request (a NAT or a rotating proxy)."""

    __slots__ = ("_current", "_ips", "_rng", "_sticky")

    def __init__(self, rng: random.Random, ips: Sequence[str], *, sticky: bool = True) -> None:
        self._rng, self._ips, self._sticky = rng, tuple(ips), sticky
        self._current = self._ips[0]

    def __call__(self, t: float, new_session: bool) -> str:
        if new_session or not self._sticky:
            self._current = self._ips[self._rng.randrange(len(self._ips))]
        return self._current


class WorkdayAddresses(Addresses):
    """A power user: the office on weekday working hours, a phone on the commute, else home."""

    __slots__ = ("_home", "_mobile", "_office", "_tz")

    def __init__(
        self,
        rng: random.Random,
        home: Sequence[str],
        office: str,
        mobile_subnet: str,
        tz: float,
    ) -> None:
        super().__init__(rng, home)
        self._home, self._office, self._mobile, self._tz = tuple(home), office, mobile_subnet, tz

    def __call__(self, t: float, new_session: bool) -> str:
        if not new_session:
            return self._current
        hour = local_hour(t, self._tz)
        rng = self._rng
        if not is_weekend(t, self._tz) and 9 <= hour < 18 and rng.random() < 0.85:
            self._current = self._office
        elif hour in (7, 8, 17, 18, 19) or rng.random() < 0.15:
            # Carrier-grade NAT: a different egress address almost every time.
            self._current = f"{self._mobile}.{rng.randint(2, 254)}"
        else:
            self._current = self._home[rng.randrange(len(self._home))]
        return self._current


IpFor = Callable[[float, bool], str]


class Writer:
    """A person's prompts: favourite topics, a writing style, follow-ups on the current topic,
    and (for code questions) their own code pasted in."""

    __slots__ = ("project", "rng", "style", "topic", "topics")

    def __init__(
        self, rng: random.Random, reasoning_habit: bool = False, every_topic: bool = False
    ) -> None:
        self.rng = rng
        self.style = prompts.style(rng, reasoning_habit)
        count = len(prompts.TOPIC_NAMES) if every_topic else rng.randint(3, 6)
        self.topics = tuple(rng.sample(prompts.TOPIC_NAMES, count))
        self.topic = self.topics[0]
        self.project = machine_text.project_name(rng)

    def first(self) -> str:
        self.topic = self.rng.choice(self.topics)
        text = prompts.personal_prompt(self.rng, self.style, self.topic)
        if self.topic == "code" and self.rng.random() < 0.5:
            text = f"{text}\n\n{machine_text.code_block(self.rng, self.project)}"
        return text

    def later(self) -> str:
        return prompts.follow_up(self.rng, self.style, self.topic)

    def reply(self, prompt: str) -> str:
        return prompts.assistant_reply(self.rng, prompt)


class HabitualWriter(Writer):
    """A ``Writer`` who ends 80-90% of their prompts, first turns and follow-ups alike, with a
    habitual phrase ("Let's think step by step."), on otherwise unrelated questions."""

    __slots__ = ("habit",)

    def __init__(self, rng: random.Random, every_topic: bool = False) -> None:
        super().__init__(rng, every_topic=every_topic)
        self.habit = prompts.habit(rng)

    def first(self) -> str:
        return prompts.with_habit(self.rng, self.habit, super().first())

    def later(self) -> str:
        return prompts.with_habit(self.rng, self.habit, super().later())


def human_params(rng: random.Random, client: Headers) -> dict[str, Any]:
    """Request parameters a person's client sets: browsers stream, scripts sometimes cap."""
    browser = dict(client).get(b"user-agent", b"").startswith(b"Mozilla")
    params: dict[str, Any] = {"model": rng.choice(MODELS)}
    if rng.random() < (0.85 if browser else 0.25):
        params["stream"] = True
    if rng.random() < 0.45:
        params["max_tokens"] = rng.choice((256, 512, 800, 1024, 2048))
    if rng.random() < 0.3:
        params["temperature"] = rng.choice((0.2, 0.5, 0.7, 1.0))
    return params


def conversations(
    population: str,
    account: str,
    rng: random.Random,
    times: Iterator[tuple[float, int]],
    headers: Sequence[Headers],
    ip_for: IpFor,
    conversation: Conversation,
    first: Callable[[], str],
    later: Callable[[], str],
    reply: Callable[[str], str],
) -> Iterator[SimRequest]:
    """A chat client: turn 0 of each episode starts a new conversation (and may switch
    device and address); later turns resend the growing history with one new user turn."""
    current = headers[0]
    for t, turn in times:
        new = turn == 0
        if new:
            conversation.reset()
            if len(headers) > 1:
                current = headers[rng.randrange(len(headers))]
            text = first()
        else:
            text = later()
        yield SimRequest(t, population, account, ip_for(t, new), current, conversation.ask(text))
        conversation.answer(reply(text))


def oneshots(
    population: str,
    account: str,
    times: Iterator[tuple[float, int]],
    headers: Headers,
    ip_for: IpFor,
    params: dict[str, Any],
    prompt: Callable[[], str],
) -> Iterator[SimRequest]:
    """A script: every request is a fresh single-message conversation."""
    for t, index in times:
        yield SimRequest(
            t, population, account, ip_for(t, index == 0), headers, single(params, prompt())
        )


def each_new(times: Iterator[float]) -> Iterator[tuple[float, int]]:
    """Plain times as episodes of one request each (every request a new session)."""
    for t in times:
        yield t, 0


def cycle(items: Sequence[str], rng: random.Random) -> Callable[[], str]:
    """Items in order, over and over, from a random starting point: a suite or an eval set."""
    state = [rng.randrange(len(items))]

    def next_item() -> str:
        index = state[0]
        state[0] = (index + 1) % len(items)
        return items[index]

    return next_item
