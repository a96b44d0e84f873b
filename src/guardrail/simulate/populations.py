"""The simulated populations, and their merged, time-ordered request stream.

Benign groups are the people and programs guardrail must leave alone (their mitigation has
to stay at or below 1% of accounts); campaigns are the distillation and harvesting attacks
it exists to stop. Each population is built from ``(seed, name)`` alone: adding, removing or
rescaling one never changes another's traffic. Traffic is open-loop: clients send on their
own schedule whatever they were answered (attackers retry later, they do not solve
challenges), so "served after mitigation" measures what leaks through.
"""

from __future__ import annotations

import calendar
import heapq
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from operator import attrgetter

from guardrail.simulate import clients, extraction, machine_text, network, prompts, timing
from guardrail.simulate.accounts import (
    MODELS,
    Addresses,
    HabitualWriter,
    WorkdayAddresses,
    Writer,
    conversations,
    cycle,
    each_new,
    human_params,
    oneshots,
)
from guardrail.simulate.traffic import (
    Conversation,
    SimRequest,
    account_rng,
    identity,
    population_rng,
)

#: Simulated time starts here (a Monday, 00:00 UTC).
EPOCH = float(calendar.timegm((2026, 11, 2, 0, 0, 0)))

_TIMEZONES = (-8, -7, -6, -5, -5, -4, -3, 0, 0, 1, 1, 1, 2, 3, 5.5, 7, 8, 9, 10)


@dataclass(frozen=True, slots=True)
class Window:
    """What every population is generated for."""

    seed: int
    start: float
    end: float


Build = Callable[[Window, int], list[Iterator[SimRequest]]]


@dataclass(frozen=True, slots=True)
class Population:
    name: str
    kind: str  # "benign" or "campaign"
    size: int  # accounts at scale 1
    description: str
    build: Build

    def accounts(self, scale: float) -> int:
        return max(1, round(self.size * scale))


# --- benign -------------------------------------------------------------------------------------


def _benign(w: Window, count: int) -> list[Iterator[SimRequest]]:
    out = []
    for i in range(count):
        rng = account_rng(w.seed, "benign", i)
        account, key = identity(w.seed, "benign", i)
        tz = rng.choice(_TIMEZONES)
        per_day = min(15.0, 0.5 * rng.paretovariate(1.5))  # heavy-tailed activity
        starts = timing.arrivals(rng, w.start, w.end, per_day, timing.HUMAN_DAY, tz)
        times = timing.episodes(rng, starts, w.end, timing.human_session((3, 30), 40.0))
        devices = [clients.human_client(rng) for _ in range(rng.randint(1, 2))]
        homes = [
            network.host(rng, network.residential_subnet(rng)) for _ in range(rng.randint(1, 2))
        ]
        writer = Writer(rng, reasoning_habit=rng.random() < 0.15)
        out.append(
            conversations(
                "benign", account, rng, times,
                [clients.identity_headers(d, key, account) for d in devices],
                Addresses(rng, homes), Conversation(human_params(rng, devices[0])),
                writer.first, writer.later, writer.reply,
            )
        )  # fmt: skip
    return out


def _power_users(w: Window, count: int) -> list[Iterator[SimRequest]]:
    out = []
    for i in range(count):
        rng = account_rng(w.seed, "power_users", i)
        account, key = identity(w.seed, "power_users", i)
        tz = rng.choice(_TIMEZONES)
        starts = timing.arrivals(rng, w.start, w.end, rng.uniform(8, 16), timing.HUMAN_DAY, tz)
        times = timing.episodes(
            rng, starts, w.end, timing.human_session((3, 30), 30.0, mean_extra=9)
        )
        devices = [clients.human_client(rng) for _ in range(rng.randint(1, 2))]
        homes = [
            network.host(rng, network.residential_subnet(rng)) for _ in range(rng.randint(1, 2))
        ]
        where = WorkdayAddresses(
            rng, homes, network.host(rng, network.corporate_subnet(rng)),
            network.carrier_subnet(rng), tz,
        )  # fmt: skip
        writer = Writer(rng, reasoning_habit=rng.random() < 0.15)
        out.append(
            conversations(
                "power_users", account, rng, times,
                [clients.identity_headers(d, key, account) for d in devices],
                where, Conversation(human_params(rng, devices[0])),
                writer.first, writer.later, writer.reply,
            )
        )  # fmt: skip
    return out


def _coding_agents(w: Window, count: int) -> list[Iterator[SimRequest]]:
    out = []
    params = {"model": "gpt-4.1", "max_tokens": 8192, "temperature": 0.2, "stream": True}
    for i in range(count):
        rng = account_rng(w.seed, "coding_agents", i)
        account, key = identity(w.seed, "coding_agents", i)
        tz = rng.choice(_TIMEZONES)
        per_day = rng.uniform(4, 10)
        starts = timing.arrivals(rng, w.start, w.end, per_day, timing.WORK_DAY, tz, weekend=0.3)
        times = timing.episodes(
            rng, starts, w.end, timing.burst((15, 70), (2.0, 10.0)), rest=(120.0, 900.0)
        )
        places = [network.residential_subnet(rng), network.corporate_subnet(rng)]
        ips = [network.host(rng, s) for s in places[: rng.randint(1, 2)]]
        project = machine_text.project_name(rng)
        out.append(
            conversations(
                "coding_agents", account, rng, times,
                [clients.identity_headers(clients.CODING_TOOL, key, account)],
                Addresses(rng, ips), Conversation(params, machine_text.CODING_SYSTEM, keep=60),
                partial(machine_text.agent_task, rng, project),
                partial(machine_text.agent_turn, rng, project),
                partial(machine_text.agent_reply, rng),
            )
        )  # fmt: skip
    return out


def _nat_office(w: Window, count: int) -> list[Iterator[SimRequest]]:
    shared = population_rng(w.seed, "nat_office")
    subnet = network.corporate_subnet(shared)
    egress = network.pool(shared, [subnet], shared.randint(4, 6))
    tz = shared.choice((-5, 0, 1))
    assignments = shared.sample(prompts.ASSIGNMENTS, 2)
    out = []
    for i in range(count):
        rng = account_rng(w.seed, "nat_office", i)
        account, key = identity(w.seed, "nat_office", i)
        per_day = min(8.0, 0.4 * rng.paretovariate(1.5))
        starts = timing.arrivals(rng, w.start, w.end, per_day, timing.WORK_DAY, tz, weekend=0.2)
        times = timing.episodes(rng, starts, w.end, timing.human_session((3, 30), 45.0))
        device = clients.human_client(rng)
        writer = Writer(rng, reasoning_habit=rng.random() < 0.15)
        first = writer.first
        if rng.random() < 0.35:  # enrolled in the class with a shared assignment
            first = _student(writer, rng.choice(assignments))
        out.append(
            conversations(
                "nat_office", account, rng, times,
                [clients.identity_headers(device, key, account)],
                Addresses(rng, egress, sticky=False), Conversation(human_params(rng, device)),
                first, writer.later, writer.reply,
            )
        )  # fmt: skip
    return out


def _student(writer: Writer, assignment: str) -> Callable[[], str]:
    def first() -> str:
        if writer.rng.random() < 0.45:
            writer.topic = "homework"
            return prompts.class_question(writer.rng, writer.style, assignment)
        return writer.first()

    return first


def _ci_batch(w: Window, count: int) -> list[Iterator[SimRequest]]:
    periods = (30.0, 60.0, 90.0, 180.0, 300.0)
    out = []
    for i in range(count):
        rng = account_rng(w.seed, "ci_batch", i)
        account, key = identity(w.seed, "ci_batch", i)
        times = each_new(timing.steady(rng, w.start, w.end, periods[i % len(periods)], 0.01))
        ip = network.host(rng, network.datacenter_subnet(rng))
        headers = clients.identity_headers(
            rng.choice((clients.python_httpx("0.27.2"), clients.any_python_sdk(rng))), key, account
        )
        params = {"model": rng.choice(MODELS), "temperature": 0, "max_tokens": 512}
        prompt: Callable[[], str]
        if i % 5 in (1, 3):  # one fixed instruction over a stream of varying documents
            prompt = partial(machine_text.ci_prompt, rng, rng.choice(machine_text.CI_INSTRUCTIONS))
        else:  # a fixed regression suite, re-sent verbatim
            prompt = cycle(machine_text.ci_suite(rng, rng.randint(12, 40)), rng)
        out.append(
            oneshots("ci_batch", account, times, headers, Addresses(rng, [ip]), params, prompt)
        )
    return out


def _eval_harness(w: Window, count: int) -> list[Iterator[SimRequest]]:
    kinds = ("math", "general", "code")
    out = []
    for i in range(count):
        rng = account_rng(w.seed, "eval_harness", i)
        account, key = identity(w.seed, "eval_harness", i)
        items = machine_text.eval_set(rng, 50, kinds[i % len(kinds)])
        loops = rng.randint(3, 5)
        period = rng.uniform(3.0, 6.0)
        nightly = timing.daily_at(rng, w.start, w.end, rng.uniform(0.5, 4.0), 900.0)
        run = timing.ticks(period, 0.01, (loops * len(items) * period,) * 2)
        times = ((t, 0) for t, _ in timing.episodes(rng, nightly, w.end, run))
        ip = network.host(rng, network.datacenter_subnet(rng))
        headers = clients.identity_headers(clients.any_python_sdk(rng), key, account)
        params = {"model": rng.choice(MODELS), "temperature": 0, "max_tokens": 1024}
        out.append(
            oneshots("eval_harness", account, times, headers, Addresses(rng, [ip]), params,
                     cycle(items, rng))
        )  # fmt: skip
    return out


def _habitual_askers(w: Window, count: int) -> list[Iterator[SimRequest]]:
    """People who end most prompts with "Let's think step by step." (or the like) on real,
    varied questions, at human pace, from home; a few households share one address."""
    shared = population_rng(w.seed, "habitual_askers")
    households = max(1, round(count * 0.75))  # the rest live with one of these
    homes = [network.host(shared, network.residential_subnet(shared)) for _ in range(households)]
    zones = [shared.choice(_TIMEZONES) for _ in range(households)]
    out = []
    for i in range(count):
        rng = account_rng(w.seed, "habitual_askers", i)
        account, key = identity(w.seed, "habitual_askers", i)
        home, tz = homes[i % households], zones[i % households]
        starts = timing.arrivals(rng, w.start, w.end, rng.uniform(1.5, 6.0), timing.HUMAN_DAY, tz)
        times = timing.episodes(rng, starts, w.end, timing.human_session((3, 30), 40.0))
        devices = [clients.human_client(rng) for _ in range(rng.randint(1, 2))]
        writer = HabitualWriter(rng)
        out.append(
            conversations(
                "habitual_askers", account, rng, times,
                [clients.identity_headers(d, key, account) for d in devices],
                Addresses(rng, [home]), Conversation(human_params(rng, devices[0])),
                writer.first, writer.later, writer.reply,
            )
        )  # fmt: skip
    return out


def _popular_clients(w: Window, count: int) -> list[Iterator[SimRequest]]:
    """People like ``benign`` whose one client is a most common build (the ones a campaign,
    ``campaign_f``, also uses): the cohort of an SDK release or a browser version."""
    out = []
    for i in range(count):
        rng = account_rng(w.seed, "popular_clients", i)
        account, key = identity(w.seed, "popular_clients", i)
        tz = rng.choice(_TIMEZONES)
        per_day = min(15.0, 0.5 * rng.paretovariate(1.5))
        starts = timing.arrivals(rng, w.start, w.end, per_day, timing.HUMAN_DAY, tz)
        times = timing.episodes(rng, starts, w.end, timing.human_session((3, 30), 40.0))
        device = clients.popular_client(rng)
        homes = [
            network.host(rng, network.residential_subnet(rng)) for _ in range(rng.randint(1, 2))
        ]
        writer = Writer(rng, reasoning_habit=rng.random() < 0.15)
        out.append(
            conversations(
                "popular_clients", account, rng, times,
                [clients.identity_headers(device, key, account)],
                Addresses(rng, homes), Conversation(human_params(rng, device)),
                writer.first, writer.later, writer.reply,
            )
        )  # fmt: skip
    return out


# --- campaigns ----------------------------------------------------------------------------------


def _campaign_a(w: Window, count: int) -> list[Iterator[SimRequest]]:
    """Sybils in a few datacenter /24s, scripted: shifts on a steady timer, round the clock."""
    shared = population_rng(w.seed, "campaign_a")
    subnets = network.distinct_subnets(shared, shared.randint(3, 4), "datacenter")
    headers_client = clients.python_requests("2.31.0")
    params = {"model": "gpt-4o", "max_tokens": 8192, "temperature": 0.3}
    out = []
    for i in range(count):
        rng = account_rng(w.seed, "campaign_a", i)
        account, key = identity(w.seed, "campaign_a", i)
        ip = network.host(rng, subnets[i % len(subnets)])
        period = rng.uniform(15.0, 30.0)
        starts = timing.arrivals(rng, w.start, w.end, rng.uniform(3, 6))
        shift = timing.ticks(period, 0.03, (300.0, 720.0))
        times = timing.episodes(rng, starts, w.end, shift, rest=(600.0, 1800.0))
        out.append(
            oneshots("campaign_a", account, times,
                     clients.identity_headers(headers_client, key, account),
                     Addresses(rng, [ip]), params,
                     partial(extraction.template_prompt, rng, extraction.TEMPLATES_A))
        )  # fmt: skip
    return out


def _campaign_b(w: Window, count: int) -> list[Iterator[SimRequest]]:
    """Sybils behind a rotating residential proxy: a new address for every request."""
    shared = population_rng(w.seed, "campaign_b")
    subnets = network.distinct_subnets(shared, 1500, "residential")
    proxy = network.pool(shared, subnets, 4000)
    sdk = clients.openai_python("1.54.3", "Linux", "x64", "3.11.9")
    out = []
    for i in range(count):
        rng = account_rng(w.seed, "campaign_b", i)
        account, key = identity(w.seed, "campaign_b", i)
        fake_tz = rng.choice(_TIMEZONES)
        per_day = rng.uniform(60, 110)
        times = each_new(timing.arrivals(rng, w.start, w.end, per_day, timing.HUMAN_DAY, fake_tz))
        params = {"model": "gpt-4o", "max_tokens": rng.choice((4096, 4096, 6000, 8000))}
        out.append(
            oneshots("campaign_b", account, times, clients.identity_headers(sdk, key, account),
                     Addresses(rng, proxy, sticky=False), params,
                     partial(extraction.paraphrased_prompt, rng))
        )  # fmt: skip
    return out


def _campaign_c(w: Window, count: int) -> list[Iterator[SimRequest]]:
    """The hydra: real-looking corporate power users, a quarter of whose prompts extract."""
    shared = population_rng(w.seed, "campaign_c")
    office = network.pool(shared, [network.corporate_subnet(shared)], 3)
    tz = shared.choice((-5, 0, 1, 8))
    out = []
    for i in range(count):
        rng = account_rng(w.seed, "campaign_c", i)
        account, key = identity(w.seed, "campaign_c", i)
        starts = timing.arrivals(rng, w.start, w.end, rng.uniform(50, 80), timing.WORK_DAY, tz)
        times = timing.episodes(
            rng, starts, w.end, timing.human_session((2, 20), 20.0, mean_extra=5)
        )
        devices = [clients.browser(rng), clients.any_python_sdk(rng)]
        writer = Writer(rng)
        out.append(
            conversations(
                "campaign_c", account, rng, times,
                [clients.identity_headers(d, key, account) for d in devices],
                Addresses(rng, office), Conversation({"model": "gpt-4o", "max_tokens": 2048}),
                partial(_hydra_turn, rng, None),
                partial(_hydra_turn, rng, writer),
                writer.reply,
            )
        )  # fmt: skip
    return out


def _hydra_turn(rng: random.Random, writer: Writer | None) -> str:
    """A first (``writer`` None) or later turn: work, a follow-up on it, or extraction."""
    roll = rng.random()
    if roll < 0.25:
        return extraction.blended_extraction(rng)
    if writer is not None and roll < 0.55:
        writer.topic = "email"
        return writer.later()
    return extraction.business_prompt(rng)


def _campaign_d(w: Window, count: int) -> list[Iterator[SimRequest]]:
    """Answer harvesting: human-looking questions, a shared residential proxy pool, fake nights."""
    shared = population_rng(w.seed, "campaign_d")
    subnets = network.distinct_subnets(shared, 100, "residential")
    proxy = network.pool(shared, subnets, 300)
    sdk = clients.openai_node("4.67.3", "Linux", "x64", "v20.11.1")
    out = []
    for i in range(count):
        rng = account_rng(w.seed, "campaign_d", i)
        account, key = identity(w.seed, "campaign_d", i)
        fake_tz = rng.choice(_TIMEZONES)
        starts = timing.arrivals(rng, w.start, w.end, rng.uniform(14, 22), timing.FAKE_DAY, fake_tz)
        times = timing.episodes(rng, starts, w.end, timing.human_session((10, 25), 20.0, 0.6, 5.0))
        ips = rng.sample(proxy, rng.randint(4, 8))
        writer = Writer(rng, every_topic=True)
        params = {"model": rng.choice(MODELS), "max_tokens": 1024}
        out.append(
            oneshots("campaign_d", account, times, clients.identity_headers(sdk, key, account),
                     Addresses(rng, ips), params,
                     writer.first)
        )  # fmt: skip
    return out


def _campaign_e(w: Window, count: int) -> list[Iterator[SimRequest]]:
    """Habitual-looking power askers: each account alone is a step-by-step asker with a power
    user's volume and its own client; they share only a sticky-session residential proxy
    provider (an exit address kept for a session, drawn from one pool of many /24s)."""
    shared = population_rng(w.seed, "campaign_e")
    provider = network.residential_provider(shared, 800, 3000)
    out = []
    for i in range(count):
        rng = account_rng(w.seed, "campaign_e", i)
        account, key = identity(w.seed, "campaign_e", i)
        fake_tz = rng.choice(_TIMEZONES)
        starts = timing.arrivals(
            rng, w.start, w.end, rng.uniform(10, 18), timing.HUMAN_DAY, fake_tz
        )
        times = timing.episodes(
            rng, starts, w.end, timing.human_session((3, 30), 30.0, mean_extra=9)
        )
        device = clients.human_client(rng)
        writer = HabitualWriter(rng, every_topic=True)
        out.append(
            conversations(
                "campaign_e", account, rng, times,
                [clients.identity_headers(device, key, account)],
                Addresses(rng, provider), Conversation(human_params(rng, device)),
                writer.first, writer.later, writer.reply,
            )
        )  # fmt: skip
    return out


def _campaign_f(w: Window, count: int) -> list[Iterator[SimRequest]]:
    """Paraphrased extraction on the most common client builds (``popular_clients``'), from a
    rotating residential proxy pool: its fingerprint cohorts are full of honest people."""
    shared = population_rng(w.seed, "campaign_f")
    proxy = network.residential_provider(shared, 600, 1500)
    out = []
    for i in range(count):
        rng = account_rng(w.seed, "campaign_f", i)
        account, key = identity(w.seed, "campaign_f", i)
        fake_tz = rng.choice(_TIMEZONES)
        per_day = rng.uniform(40, 80)
        times = each_new(timing.arrivals(rng, w.start, w.end, per_day, timing.HUMAN_DAY, fake_tz))
        device = clients.popular_client(rng)
        params = {"model": "gpt-4o", "max_tokens": rng.choice((2048, 4096, 4096, 8000))}
        out.append(
            oneshots("campaign_f", account, times, clients.identity_headers(device, key, account),
                     Addresses(rng, proxy, sticky=False), params,
                     partial(extraction.paraphrased_prompt, rng))
        )  # fmt: skip
    return out


POPULATIONS: tuple[Population, ...] = (
    Population("benign", "benign", 400,
               "people chatting: heavy-tailed use, daily cycle, 1-2 home IPs", _benign),
    Population("power_users", "benign", 20,
               "heavy human use from home, office and a phone carrier", _power_users),
    Population("coding_agents", "benign", 40,
               "one agent tool: bursts of 15-70 requests, shared system prompt", _coding_agents),
    Population("nat_office", "benign", 100,
               "100 accounts behind one NAT /24, some on a shared class assignment", _nat_office),
    Population("ci_batch", "benign", 5,
               "CI jobs on a timer, 24/7: fixed suites or one instruction over documents",
               _ci_batch),
    Population("eval_harness", "benign", 3,
               "nightly loops over a fixed 50-prompt eval set (one asks for CoT)", _eval_harness),
    Population("habitual_askers", "benign", 25,
               "80-90% of varied questions end 'Let's think step by step.'; homes, some shared",
               _habitual_askers),
    Population("popular_clients", "benign", 500,
               "people like benign, each on a most common SDK or browser build", _popular_clients),
    Population("campaign_a", "campaign", 300,
               "sybils on 3-4 datacenter /24s, steady timer, fixed reasoning templates",
               _campaign_a),
    Population("campaign_b", "campaign", 300,
               "rotating residential proxies, jittered timing, paraphrased reasoning prompts",
               _campaign_b),
    Population("campaign_c", "campaign", 5,
               "hydra: corporate power users with 25% extraction blended in", _campaign_c),
    Population("campaign_d", "campaign", 60,
               "answer harvesting, no extraction phrasing, shared proxy pool, fake nights",
               _campaign_d),
    Population("campaign_e", "campaign", 60,
               "habitual-looking power askers sharing a sticky residential proxy provider",
               _campaign_e),
    Population("campaign_f", "campaign", 100,
               "paraphrased extraction on the most common SDK and browser builds, rotating proxy",
               _campaign_f),
)  # fmt: skip
BY_NAME: dict[str, Population] = {p.name: p for p in POPULATIONS}


def window(seed: int, days: float) -> Window:
    return Window(seed, EPOCH, EPOCH + days * timing.DAY)


def account_streams(
    seed: int, days: float, scale: float, only: Iterable[str] | None = None
) -> list[Iterator[SimRequest]]:
    """One lazy, time-ordered generator per account of the chosen populations."""
    w = window(seed, days)
    chosen = POPULATIONS if only is None else tuple(BY_NAME[name] for name in only)
    streams: list[Iterator[SimRequest]] = []
    for population in chosen:
        streams += population.build(w, population.accounts(scale))
    return streams


def stream(
    seed: int, days: float, scale: float, only: Iterable[str] | None = None
) -> Iterator[SimRequest]:
    """Every request of every chosen population, in time order (ties in a fixed order)."""
    return heapq.merge(*account_streams(seed, days, scale, only), key=_at)


_at = attrgetter("t")


def sizes(scale: float) -> dict[str, int]:
    """Accounts per population at ``scale``."""
    return {p.name: p.accounts(scale) for p in POPULATIONS}
