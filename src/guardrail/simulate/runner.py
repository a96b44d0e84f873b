"""Drive the simulated stream through a real ASGI stack, on a simulated clock.

Requests go to the app one at a time, in time order, as a server behind a reverse proxy
would hand them over: the TCP peer is the proxy (127.0.0.1), the client's address is in
``X-Forwarded-For``. No HTTP client, no sockets: the scope is built here, ``receive`` hands
over the body, ``send`` keeps the status and the ``Guardrail-Action`` header. The decision
is read back from ``scope["state"]["guardrail"]``. The clock is set to each request's time;
``sleep`` records the delay asked for (a throttle tier's) and returns at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.types import ASGIApp, Message

from guardrail.backends.risk_shared import SharedRiskStore
from guardrail.errors import StorageError
from guardrail.middleware import Guardrail
from guardrail.policy import Policy
from guardrail.simulate.populations import BY_NAME, EPOCH, POPULATIONS, stream
from guardrail.simulate.report import Tally
from guardrail.simulate.traffic import PATH, SimRequest

PROXY = ("127.0.0.1", 51000)
_ASGI = {"version": "3.0", "spec_version": "2.4"}
_RAW_PATH = PATH.encode()
MITIGATIONS = ("throttle", "challenge", "block")

Progress = Callable[[float, int], None]
Pause = Callable[[], Awaitable[None]]


def proxy_untrusted(policy: Policy) -> str | None:
    """What the run cannot show when the policy does not trust the simulated proxy: clients'
    addresses and account headers are believed only from a trusted proxy (issue 11), so every
    simulated client would be the proxy, without an account. None when it is trusted."""
    proxy = ipaddress.ip_address(PROXY[0])
    if any(proxy in net for net in policy.identity.client_ip.trusted_proxies):
        return None
    return (
        f"the simulated traffic arrives through a proxy at {PROXY[0]}, which "
        "identity.client_ip.trusted_proxies does not list: every client is that one address "
        f"and no account header is read. Add {PROXY[0]}/32 to simulate a deployment behind "
        "a reverse proxy."
    )


class SimClock:
    """The injected clock and sleep: time is whatever the runner says it is."""

    __slots__ = ("now", "slept")

    def __init__(self, start: float) -> None:
        self.now = start
        self.slept = 0.0  # seconds of delay requested, in total

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        # Recorded, neither waited for nor added to the clock: the next request of the
        # stream comes at its own time whatever this one was delayed by.
        self.slept += max(0.0, seconds)


class DecisionLike(Protocol):
    """What is read from ``scope["state"]["guardrail"]`` (guardrail.decision.Decision)."""

    action: str
    tier: str | None
    signals: dict[str, float]


def classify(status: int, action: bytes | None) -> str:
    """The response as a client sees it: served (2xx, throttled ones included), limited (429),
    challenged or blocked (403 with that ``Guardrail-Action``), else error."""
    if 200 <= status < 300:
        return "served"
    if status == 429:
        return "limited"
    if status == 403 and action == b"challenge":
        return "challenged"
    if status == 403 and action == b"block":
        return "blocked"
    return "error"


def mitigation(decision: DecisionLike | None) -> str | None:
    """The mitigating action guardrail decided (also in mode observe, where it is not applied):
    throttle, challenge or block; a request in a throttle tier counts as throttled even when
    the tier's own limit refused it. Plain limits are not mitigation."""
    if decision is None:
        return None
    action = decision.action
    if action in MITIGATIONS:
        return action
    if getattr(decision, "tier", None):
        return "throttle"
    return None


class _Exchange:
    """One request's ``receive`` and ``send``."""

    __slots__ = ("_body", "_done", "_finished", "_given", "action", "status")

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._given = False
        self._finished = False
        self._done: asyncio.Event | None = None
        self.status = 0
        self.action: bytes | None = None

    async def receive(self) -> Message:
        if not self._given:
            self._given = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        # Asked again: the client stays connected until the response is complete.
        if not self._finished:
            if self._done is None:
                self._done = asyncio.Event()
            await self._done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            for name, value in message.get("headers", ()):
                if name.lower() == b"guardrail-action":
                    self.action = value
        elif kind == "http.response.body" and not message.get("more_body", False):
            self._finished = True
            if self._done is not None:
                self._done.set()


def scope_for(request: SimRequest, state: dict[str, Any]) -> dict[str, Any]:
    """The ASGI scope a server would build for ``request`` arriving through the proxy."""
    return {
        "type": "http",
        "asgi": _ASGI,
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": PATH,
        "raw_path": _RAW_PATH,
        "query_string": b"",
        "root_path": "",
        "server": ("api.sim.example", 443),
        "client": PROXY,
        "headers": [
            *request.headers,
            (b"content-length", str(len(request.body)).encode()),
            (b"x-forwarded-for", request.ip.encode()),
        ],
        "state": state,
    }


async def drive(
    app: ASGIApp | Sequence[Guardrail],
    requests: Iterable[SimRequest],
    clock: SimClock,
    tally: Tally,
    progress: Progress | None = None,
    pause: Pause | None = None,
    every: int = 500,
    seed: int = 1,
) -> int:
    """Send every request to ``app`` at its time and tally the outcome; returns the count.
    Several guardrail instances (workers behind a load balancer): each request goes to one at
    random (seeded by ``seed``), and each instance's risk state shared through Redis is
    flushed every ``risk.share_every`` of simulated time.

    Every ``every`` requests, ``progress(simulated time, requests so far)`` is called and
    ``pause()`` awaited. Nothing here waits on real I/O, so without a pause the event loop
    would never run guardrail's background work (the audit writer's thread hand-offs): its
    queue would overflow and records be dropped, which no real server allows to happen.
    """
    apps: Sequence[ASGIApp] = app if isinstance(app, Sequence) else [app]
    shared = [_shared_store(a) for a in apps]
    due = [float("-inf")] * len(apps)
    pick = random.Random(seed).randrange
    count = 0
    for request in requests:
        clock.now = request.t
        for index, store in enumerate(shared):
            if store is not None and request.t >= due[index]:
                due[index] = request.t + store.interval
                try:
                    await store.flush()
                except StorageError as exc:
                    tally.app_error(exc)
        app = apps[pick(len(apps))] if len(apps) > 1 else apps[0]
        state: dict[str, Any] = {}
        exchange = _Exchange(request.body)
        slept = clock.slept
        try:
            await app(scope_for(request, state), exchange.receive, exchange.send)
        except Exception as exc:
            # The app failed after (or before) answering: the client saw a 500 at best.
            tally.app_error(exc)
            if not exchange.status:
                exchange.status = 500
        decision: DecisionLike | None = state.get("guardrail")
        tally.add(
            request,
            classify(exchange.status, exchange.action),
            mitigation(decision),
            decision.signals if decision is not None else None,
            clock.slept - slept,
        )
        count += 1
        if count % every == 0:
            if pause is not None:
                await pause()
            if progress is not None:
                progress(request.t, count)
    return count


def _shared_store(app: ASGIApp) -> SharedRiskStore | None:
    """The risk store of a guardrail instance whose risk state is shared through Redis, now
    flushed by ``drive`` on the simulated clock instead of its own loop on the real one."""
    risk = getattr(app, "risk", None)
    store = getattr(risk, "store", None)
    if not isinstance(store, SharedRiskStore):
        return None
    store.autoflush = False
    return store


@dataclass(frozen=True, slots=True)
class Config:
    """What to simulate: the same seed, days and scale give the same request stream."""

    seed: int = 1
    days: float = 2.0
    scale: float = 1.0
    only: Sequence[str] | None = None  # population names; None: all of them


async def simulate(
    app: ASGIApp,
    policy: Policy,
    config: Config,
    *,
    audit: str,
    storage: str | None = None,
    progress: Progress | None = None,
    instances: int = 1,
) -> tuple[Tally, int]:
    """Wrap ``app`` in guardrail (simulated clock, ``audit`` sink, optional ``storage``), send
    it the whole stream, shut guardrail down (flushing the audit trail) and return the tally
    and the number of requests sent. ``instances``: that many guardrails on the one storage,
    each request sent to one at random; ``{instance}`` in ``audit`` names each one's trail."""
    chosen = POPULATIONS if config.only is None else [BY_NAME[name] for name in config.only]
    tally = Tally([(p.name, p.kind, p.accounts(config.scale)) for p in chosen])
    clock = SimClock(EPOCH)
    guards = [
        Guardrail(
            app,
            policy=policy,
            clock=clock,
            sleep=clock.sleep,
            storage=storage,
            audit=audit.replace("{instance}", str(index)),
        )
        for index in range(instances)
    ]
    requests = stream(config.seed, config.days, config.scale, [p.name for p in chosen])

    async def pause() -> None:
        await asyncio.sleep(0)  # let background tasks take their turn
        for guard in guards:
            await guard.audit.flush()  # and the audit writers catch up (thread round trips)

    try:
        count = await drive(guards, requests, clock, tally, progress, pause, seed=config.seed)
    finally:
        for guard in guards:
            await guard.shutdown()
    return tally, count
