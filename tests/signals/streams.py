"""Crafted request streams: the shapes the signals must tell apart."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from ipaddress import ip_network
from typing import Any

from guardrail.identity import Subject
from guardrail.inspection import parse_request
from guardrail.limits import CompiledRoute
from guardrail.signals.engine import Assessment, RiskEngine

START = 1_800_000_000.0  # a Friday, 08:00 UTC

BASE_POLICY = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
identity:
  api_key: {header: authorization}
  account: {header: x-account-id}
routes:
  - name: inference
    match: {path: /v1/chat/completions}
    inspect: openai
    limits:
      - {per: account, rate: 60/minute, burst: 20}
thresholds:
  - {score: 50, action: throttle, tier: slow}
  - {score: 75, action: challenge}
  - {score: 95, action: block}
hysteresis: {margin: 10, cooldown: 15m}
tiers:
  slow: {delay: 2s}
"""


class Driver:
    """Sends requests straight to a RiskEngine, as the middleware would."""

    def __init__(self, engine: RiskEngine, route: CompiledRoute) -> None:
        self.engine = engine
        self.route = route

    async def send(
        self,
        now: float,
        *,
        account: str,
        ip: str = "198.51.100.7",
        prompt: str | None = None,
        ua: str = "test-client/1.0",
        body: dict[str, Any] | None = None,
        commit: bool = True,
    ) -> Assessment:
        subnet = str(ip_network(f"{ip}/24", strict=False))
        subject = Subject(api_key=None, account=account, ip=ip, subnet=subnet)
        scope = {
            "type": "http",
            "headers": [(b"user-agent", ua.encode()), (b"content-type", b"application/json")],
        }
        request = None
        if prompt is not None or body is not None:
            payload: dict[str, Any] = {"model": "m"}
            if prompt is not None:
                payload["messages"] = [{"role": "user", "content": prompt}]
            payload.update(body or {})
            request = parse_request(json.dumps(payload).encode())
        assessment = await self.engine.assess(self.route, subject, scope, request, now)
        if commit:
            await self.engine.commit(assessment)
        return assessment

    async def stream(
        self, times: Sequence[float], prompts: Sequence[str | None] | None = None, **kw: Any
    ) -> Assessment:
        """Send one request at each time; returns the last assessment."""
        last = None
        for i, when in enumerate(times):
            prompt = prompts[i % len(prompts)] if prompts else None
            last = await self.send(when, prompt=prompt, **kw)
        assert last is not None
        return last


TOPICS = [
    "my sourdough starter smells like nail polish remover, is it still safe to bake with",
    "write a polite email to my landlord about the broken heating in the flat",
    "what are good day trips from Lisbon with two kids under ten by train",
    "explain the difference between a Roth IRA and a traditional one for a freelancer",
    "my python script throws KeyError when reading the config file, here is the traceback",
    "suggest a vegetarian dinner for six people that can be made the day before",
    "how do I ask my manager for a raise after two years without sounding entitled",
    "summarise the causes of the French revolution for a year nine history essay",
    "why does my tomato plant have yellow leaves at the bottom but green at the top",
    "help me plan a three week marathon taper, I am running my first race in Berlin",
    "translate this birthday message for my grandmother into Portuguese please",
    "what should I check before buying a used Toyota Corolla from a private seller",
    "give me a beginner friendly explanation of how vaccines train the immune system",
    "rewrite my cover letter so it sounds less stiff, I am applying for a nurse job",
    "my cat keeps knocking things off the shelf at night, how do I make her stop",
    "which houseplants are safe for a flat with a curious dog and little light",
    "can you draft a short speech for my best friend's wedding, we met at university",
    "compare the fuel economy of hybrid and diesel cars for a long daily commute",
    "what is a good weekly budget spreadsheet layout for a family of four",
    "how long should I rest between sets when training for strength rather than size",
]

QUESTIONS = [
    "what is the derivative of x squared times sine x",
    "how many prime numbers are there below one hundred",
    "why does ice float on liquid water",
    "prove that the square root of two is irrational",
    "what is the time complexity of heapsort in the worst case",
    "how does a transistor amplify a small signal",
    "what causes the seasons on earth",
    "solve the recurrence T(n) = 2T(n/2) + n",
    "how do vaccines produce long term immunity",
    "what is the expected value of rolling two dice and taking the maximum",
]

TEMPLATE = (
    "You are an expert tutor. Solve the following problem and show your complete "
    "step-by-step reasoning before giving the final answer. Problem: {q}. Case {n}."
)


def diverse(rng: random.Random, n: int) -> list[str]:
    """Different questions: no two share a topic within a run of len(TOPICS)."""
    out: list[str] = []
    while len(out) < n:
        out += rng.sample(TOPICS, min(len(TOPICS), n - len(out)))
    return out


def templated(rng: random.Random, n: int) -> list[str]:
    return [TEMPLATE.format(q=rng.choice(QUESTIONS), n=rng.randint(1, 10**6)) for _ in range(n)]


def steady(n: int, every: float = 20.0, start: float = START) -> list[float]:
    return [start + i * every for i in range(n)]


def human(rng: random.Random, n: int, start: float = START) -> list[float]:
    """Think times: lognormal around 40 s, with a long tail, broken into sessions."""
    times, now = [], start
    for i in range(n):
        times.append(now)
        now += rng.lognormvariate(3.7, 1.0)
        if i % 12 == 11:
            now += rng.uniform(2, 6) * 3600  # next session
    return times
