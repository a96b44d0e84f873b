"""Issue 11, finding 2: one IP wipes the risk state with a flood of random API keys.

The attack: a key is driven into the block band; then one address sends thousands of
requests (8,000 against a store of 1,000: the issue's 110,000 scaled down), each with a new
random key, nearly all refused by its per-ip limit. On 0.1 every
refused request bought a principal (its refusal was written back), so the flood evicted every
principal from the memory store, the blocked key's included, and the blocked key was served
again. Fixed: a refused request buys no principal, a principal in a band is evicted only by
other banded principals, and one network's new principals are held to its share of the store.

Part of the flood goes through uvicorn on loopback, the rest straight through the ASGI
interface (uvicorn manages a few thousand requests a second here), into the same app.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from guardrail import Guardrail
from guardrail.backends.risk_memory import MemoryRiskStore
from guardrail.signals.catalog import SIGNALS

from .conftest import served
from conftest import FakeClock
from helpers import build

MAX_SUBJECTS = 1000
#: A network's share of the store's principals (risk_memory.network_share: a sixteenth of
#: max_subjects, 64 at least), written out: the fixed outcome, not the code's own figure.
SHARE = max(MAX_SUBJECTS // 16, 64)
FLOOD = 8_000  # requests from the flooding address, each with a new random key
THROUGH_UVICORN = 1_000  # of which through uvicorn; the rest straight through ASGI
OTHERS = 300  # keyless clients of other networks, one /24 each, seen before the flood
STEP = 0.002  # the flood's pace on the app's clock: 500 a second for 16 s

WEIGHTS = "".join(
    f"    {s.name}: {{weight: {5.0 if s.name == 'reasoning_extraction' else 0}}}\n" for s in SIGNALS
)
POLICY = f"""
version: 1
secret: env:GUARDRAIL_TEST_SECRET
max_subjects: {MAX_SUBJECTS}
identity:
  api_key: {{header: authorization}}
  client_ip: {{trusted_proxies: [127.0.0.1]}}
routes:
  - name: inference
    match: {{path: "/v1/chat/completions$", methods: [POST]}}
    inspect: openai
    limits:
      - {{per: ip, rate: 65/second, burst: 20}}
risk:
  signals:
{WEIGHTS}thresholds:
  - {{score: 95, action: block}}
"""
ASK = "Please answer this question and show your full reasoning, number {}"
HELLO = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
FLOODER = "198.51.100.7"
VICTIM = "192.0.2.10"


def chat(text: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


async def asgi_post(app: Guardrail, ip: str, key: str) -> int:
    """One flood request straight through the ASGI interface, as uvicorn would call it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"x-forwarded-for", ip.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(HELLO)).encode()),
        ],
    }
    status = [0]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": HELLO, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]

    await app(scope, receive, send)
    return status[0]


async def test_a_flood_of_random_keys_from_one_ip_leaves_the_blocked_key_blocked(
    tmp_path: Path, clock: FakeClock
) -> None:
    app = build(tmp_path, clock, POLICY)  # the echo app, audited to tmp_path
    assert app.risk is not None
    store = app.risk.store
    assert isinstance(store, MemoryRiskStore)
    victim = {"authorization": "Bearer sk-blocked", "x-forwarded-for": VICTIM}
    others = [f"10.{i // 250}.{i % 250}.5" for i in range(OTHERS)]

    async with served(app, proxy_headers=False) as url, httpx.AsyncClient(base_url=url) as http:
        # A key asks for hidden reasoning until it is blocked.
        statuses = []
        for n in range(6):
            response = await http.post(
                "/v1/chat/completions", json=chat(ASK.format(n)), headers=victim
            )
            statuses.append(response.status_code)
            clock.advance(1)
        assert statuses[-1] == 403, statuses
        # Other networks' clients, each seen once.
        for ip in others:
            response = await http.post(
                "/v1/chat/completions", json=chat("hello"), headers={"x-forwarded-for": ip}
            )
            assert response.status_code == 200
        clock.advance(1)

        # The flood: through uvicorn, 16 at a time, then straight through ASGI.
        counts: dict[int, int] = {}
        gate = asyncio.Semaphore(16)

        async def flood_one() -> None:
            async with gate:
                clock.advance(STEP)
                response = await http.post(
                    "/v1/chat/completions",
                    content=HELLO,
                    headers={
                        "authorization": f"Bearer sk-{secrets.token_hex(12)}",
                        "x-forwarded-for": FLOODER,
                        "content-type": "application/json",
                    },
                )
                counts[response.status_code] = counts.get(response.status_code, 0) + 1

        await asyncio.gather(*(flood_one() for _ in range(THROUGH_UVICORN)))
        for _ in range(FLOOD - THROUGH_UVICORN):
            clock.advance(STEP)
            status = await asgi_post(app, FLOODER, f"sk-{secrets.token_hex(12)}")
            counts[status] = counts.get(status, 0) + 1
        assert counts.get(429, 0) >= 0.85 * FLOOD, counts  # nearly all refused by the ip limit
        admitted = counts.get(200, 0)

        # Afterwards the blocked key is still blocked
        response = await http.post("/v1/chat/completions", json=chat("hello"), headers=victim)
        blocked_after = response.status_code
        now = clock()
        kept = sum(store.standing(f"i:{ip}", now) is not None for ip in others)
        principals = store.sizes()["principals"]  # before shutdown clears the store

    flooding = principals - kept - 1  # the flooding network's: all but the others and the victim
    figures = (
        f"flood: {counts}; blocked key answered {blocked_after} after it; other networks' "
        f"principals kept {kept} of {OTHERS}; principals held {principals}, of which the "
        f"flooding network's {flooding} (its share: {SHARE}; it was admitted {admitted} times)"
    )
    print(figures)  # shown with -s
    assert blocked_after == 403, figures
    assert kept == OTHERS, figures
    assert flooding <= SHARE, figures


async def test_in_redis_a_flood_of_random_keys_buys_no_state(
    tmp_path: Path, clock: FakeClock, redis_url: str
) -> None:
    """The same flood against the Redis store: no eviction there, but each refused request
    wrote a principal (its refusal) kept for the store's ttl, two days by default."""
    app = build(tmp_path, clock, POLICY, storage=redis_url)
    r = aioredis.from_url(redis_url)
    counts: dict[int, int] = {}
    async with served(app, proxy_headers=False) as url, httpx.AsyncClient(base_url=url) as http:
        await http.post("/v1/chat/completions", content=HELLO, headers={"x-forwarded-for": VICTIM})
        before = (await r.info("memory"))["used_memory"]
        for n in range(2_000):  # a fifth through uvicorn, the rest straight through ASGI
            clock.advance(STEP)
            key = f"sk-{secrets.token_hex(12)}"
            if n % 5 == 0:
                response = await http.post(
                    "/v1/chat/completions",
                    content=HELLO,
                    headers={"authorization": f"Bearer {key}", "x-forwarded-for": FLOODER},
                )
                status = response.status_code
            else:
                status = await asgi_post(app, FLOODER, key)
            counts[status] = counts.get(status, 0) + 1
        await app.risk.store.flush()  # type: ignore[union-attr, attr-defined]
        grown = (await r.info("memory"))["used_memory"] - before
        principals = len([key async for key in r.scan_iter(match="*{r:k:*}")])
    await r.aclose()
    admitted = counts.get(200, 0)
    figures = (
        f"flood: {counts}; principals in Redis {principals} (admitted {admitted}); "
        f"used_memory grew {grown / 1024:.0f} KiB"
    )
    print(figures)  # shown with -s
    assert counts.get(429, 0) >= 0.8 * 2_000, figures
    assert principals == admitted, figures  # the refused ones bought none


async def test_a_flood_into_the_overflow_state_does_not_refuse_a_new_neighbour(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Issue 11 review: the overflow state that a network's new principals share once it
    holds its share. An attacker mints the share in random keys, then drives the overflow
    state into the block band with reasoning requests from new keys: on the base every new
    principal of that /24 (a cloud neighbour, a CGNAT peer) was refused 403 on its first
    request, and still days later (a subnet's count went down only on eviction). Fixed: a
    principal redirected to the overflow state is assessed from empty state and its own
    request, and a network's count goes down as its principals expire."""
    app = build(tmp_path, clock, POLICY)  # the echo app, audited to tmp_path
    assert app.risk is not None
    store = app.risk.store
    assert isinstance(store, MemoryRiskStore)
    subnet = "s:198.51.100.0/24"

    async with served(app, proxy_headers=False) as url, httpx.AsyncClient(base_url=url) as http:

        async def post(text: str, key: str, ip: str) -> int:
            clock.advance(0.1)  # within the per-ip limit: only the risk score may refuse
            response = await http.post(
                "/v1/chat/completions",
                json=chat(text),
                headers={"authorization": f"Bearer {key}", "x-forwarded-for": ip},
            )
            return response.status_code

        minted = [await post("hi", f"sk-{secrets.token_hex(12)}", FLOODER) for _ in range(70)]
        held = store.held(subnet)
        flood = [
            await post(ASK.format(n), f"sk-{secrets.token_hex(12)}", FLOODER) for n in range(12)
        ]
        neighbour = await post("hi", f"sk-{secrets.token_hex(12)}", "198.51.100.200")
        clock.advance(store.ttl + 1)  # the flood's principals expire
        later = await post("hi", f"sk-{secrets.token_hex(12)}", "198.51.100.201")
        held_later = store.held(subnet)

    figures = (
        f"minted keys {minted.count(200)} of 70 served, the network held {held} principals "
        f"(share {SHARE}); reasoning flood from new keys {flood}; a new neighbour's 'hi' "
        f"answered {neighbour}; after the ttl a new key answered {later}, the network then "
        f"held {held_later}"
    )
    print(figures)  # shown with -s
    assert minted.count(200) == 70 and held == SHARE, figures
    assert neighbour == 200, figures
    assert later == 200 and held_later == 1, figures  # its own state again, the rest gone


async def test_behind_a_proxy_on_a_unix_socket_customers_are_no_network(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The same flood where every client's subnet is ``unknown`` (uvicorn on a unix socket
    behind a proxy: no client address in the scope). On the base that subnet had a share like
    a /24, so after it every new customer shared one state, and one attacker's reasoning
    requests refused them all. Fixed: a subnet that is no network has no share."""
    app = build(
        tmp_path, clock, POLICY.replace("  client_ip: {trusted_proxies: [127.0.0.1]}\n", "")
    )
    assert app.risk is not None
    store = app.risk.store
    assert isinstance(store, MemoryRiskStore)
    socket = str(tmp_path / "app.sock")
    transport = httpx.AsyncHTTPTransport(uds=socket)
    async with (
        served(app, uds=socket),
        httpx.AsyncClient(transport=transport, base_url="http://proxy") as http,
    ):

        async def post(text: str, key: str) -> int:
            clock.advance(0.1)
            response = await http.post(
                "/v1/chat/completions",
                json=chat(text),
                headers={"authorization": f"Bearer {key}"},
            )
            return response.status_code

        customers = [await post("hi", f"sk-{secrets.token_hex(12)}") for _ in range(70)]
        attacker = [await post(ASK.format(n), f"sk-{secrets.token_hex(12)}") for n in range(12)]
        newcomer = await post("hi", f"sk-{secrets.token_hex(12)}")
        held = store.held("s:unknown")
        principals = store.sizes()["principals"]

    figures = (
        f"customers served {customers.count(200)} of 70; the attacker's new keys {attacker}; "
        f"a new customer answered {newcomer}; subnet 'unknown' held {held} (a share would be "
        f"{SHARE}); principals {principals}"
    )
    print(figures)  # shown with -s
    assert customers.count(200) == 70, figures
    assert newcomer == 200, figures
    assert held == 0 and principals == 70 + 12 + 1, figures
