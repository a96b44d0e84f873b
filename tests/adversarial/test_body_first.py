"""Issue 11, finding 6: the body read before limits.

Inspected routes read the body (up to ``inspect_max_bytes``) before any limit or band is
decided, and with no deadline. A key already over its limit, or already blocked, opens hundreds
of connections that each send headers with a large Content-Length and most of a body, then
stall: each held a connection and what it sent, and none was refused (on 0.1: 0 of 300
answered, the server grew by ~74 MB). Fixed: what needs no body is decided first (429 / 403
before the body is read), and a body that stalls gets a 408 at the route's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import socket
import time
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.adversarial.conftest import rss_bytes, served

from guardrail import Guardrail, Policy
from guardrail.signals.catalog import SIGNALS

PATH = "/v1/chat/completions"
DECLARED = 260_000  # under inspect_max_bytes (256 KiB): the whole body would be read
SENT = 250_000  # what each stalled client sends of it before it stalls
CONNECTIONS = 300
ANSWER_WITHIN = 5.0  # seconds, well under the default inspect_timeout (10 s)
ASK = "Please answer this question and show your full reasoning, number {}"


def policy(limit: str = "{per: api_key, rate: 2/minute, burst: 2}", route: str = "") -> str:
    # Only reasoning_extraction counts, weighted so that four prompts asking for reasoning
    # put a key in the block band.
    weights = "".join(
        f"    {s.name}: {{weight: {5.0 if s.name == 'reasoning_extraction' else 0}}}\n"
        for s in SIGNALS
    )
    return f"""
version: 1
secret: env:GUARDRAIL_TEST_SECRET
identity:
  api_key: {{header: authorization}}
routes:
  - name: inference
    match: {{path: "{PATH}$", methods: [POST]}}
    inspect: openai
{route}    limits:
      - {limit}
risk:
  signals:
{weights}thresholds:
  - {{score: 95, action: block}}
"""


def echo() -> Starlette:
    async def chat(request: Request) -> Response:
        return Response(await request.body(), media_type="application/json")

    return Starlette(routes=[Route(PATH, chat, methods=["POST"])])


def guarded(tmp_path: Path, storage: str, text: str) -> Guardrail:
    return Guardrail(
        echo(),
        policy=Policy.from_string(text),
        storage=storage,
        audit=f"file://{tmp_path / 'audit.jsonl'}",
    )


def chat(n: int) -> bytes:
    return json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": ASK.format(n)}]}
    ).encode()


async def post(port: int, key: str, body: bytes) -> int:
    """One whole request on its own connection; its status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {PATH} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    status = int((await reader.readline()).split()[1])
    writer.close()
    return status


STALLED_BODY = b'{"model":"m","messages":[{"role":"user","content":"' + b"x" * SENT


async def stall(port: int, key: str, deadline: float, held: list[socket.socket]) -> int | None:
    """Headers with a large Content-Length and most of the body, then nothing: the status
    answered by ``deadline`` (loop time), or None. A raw socket: what the server has not read
    stays in the kernel, not in this process (whose memory is the server's figure)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    held.append(sock)
    head = (
        f"POST {PATH} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\n"
        f"content-type: application/json\r\ncontent-length: {DECLARED}\r\n\r\n"
    )
    try:
        async with asyncio.timeout_at(deadline):
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, head.encode())
            await loop.sock_sendall(sock, STALLED_BODY)
            answer = await loop.sock_recv(sock, 64)
    except TimeoutError:
        return None
    return int(answer.split()[1]) if answer else None


def held_bytes() -> int:
    """The server's resident memory, with what was freed given back to the system first (glibc
    keeps freed heap otherwise, and the figure is what the server holds, not what it held)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_bytes()


async def flood(port: int, key: str) -> tuple[dict[int | None, int], int]:
    """CONNECTIONS stalled requests from ``key``: how many got which answer within
    ANSWER_WITHIN seconds, and how much the process grew while they were held."""
    before = held_bytes()
    held: list[socket.socket] = []
    deadline = asyncio.get_running_loop().time() + ANSWER_WITHIN
    statuses = await asyncio.gather(*(stall(port, key, deadline, held) for _ in range(CONNECTIONS)))
    grown = held_bytes() - before
    for sock in held:
        sock.close()
    counts: dict[int | None, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return counts, grown


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue("redis_url"))


async def test_a_key_over_its_limit_is_refused_before_its_body(tmp_path: Path, storage: str):
    app = guarded(tmp_path, storage, policy())
    async with served(app) as url:
        port = int(url.rsplit(":", 1)[1])
        statuses = [await post(port, "sk-over", b'{"model":"m"}') for _ in range(3)]
        assert statuses == [200, 200, 429]  # 2/minute, burst 2: over its limit
        started = time.monotonic()
        counts, grown = await flood(port, "sk-over")
        took = time.monotonic() - started
    refused = counts.get(429, 0)
    print(
        f"\n{storage.split(':')[0]}: {refused} of {CONNECTIONS} stalled requests refused (429) "
        f"within {ANSWER_WITHIN:g} s ({took:.2f} s for all), the server grew by "
        f"{grown / 1e6:.1f} MB (0.1: none refused, +74 MB)"
    )
    assert refused == CONNECTIONS, counts
    assert grown < 20e6  # what the stalled bodies would hold: CONNECTIONS x SENT = 75 MB


async def test_a_blocked_key_gets_its_403_without_its_body_being_read(tmp_path: Path, storage: str):
    app = guarded(tmp_path, storage, policy("{per: api_key, rate: 60/minute, burst: 20}"))
    async with served(app) as url:
        port = int(url.rsplit(":", 1)[1])
        statuses = []
        for n in range(8):  # prompts that ask for reasoning: the block band by the fifth
            statuses.append(await post(port, "sk-blocked", chat(n)))
            if statuses[-1] == 403:
                break
        assert statuses[-1] == 403, statuses
        counts, grown = await flood(port, "sk-blocked")
    blocked = counts.get(403, 0)
    print(
        f"\n{storage.split(':')[0]}: {blocked} of {CONNECTIONS} stalled requests of a blocked "
        f"key refused (403) within {ANSWER_WITHIN:g} s; the server grew by {grown / 1e6:.1f} MB"
    )
    assert blocked == CONNECTIONS, counts
    assert grown < 20e6


async def test_a_body_that_stalls_gets_a_408_at_the_deadline_and_its_connection_closed(
    tmp_path: Path,
):
    app = guarded(tmp_path, "memory://", policy(route="    inspect_timeout: 0.5s\n"))
    loop = asyncio.get_running_loop()
    async with served(app) as url:
        port = int(url.rsplit(":", 1)[1])
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        head = (
            f"POST {PATH} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer sk-slow\r\n"
            f"content-type: application/json\r\ncontent-length: {DECLARED}\r\n\r\n"
        )
        started = time.monotonic()
        await loop.sock_sendall(sock, head.encode() + STALLED_BODY[:5000])
        answer = b""
        try:
            async with asyncio.timeout(ANSWER_WITHIN):
                while chunk := await loop.sock_recv(sock, 65536):  # until the server closes
                    answer += chunk
        except TimeoutError:
            pass
        took = time.monotonic() - started
        closed = time.monotonic() - started < ANSWER_WITHIN
        sock.close()
    await app.shutdown()
    print(f"\n{answer[:12]!r} after {took:.2f} s (deadline 0.5 s), connection closed: {closed}")
    head_text, _, body = answer.partition(b"\r\n\r\n")
    assert head_text.startswith(b"HTTP/1.1 408"), answer[:200]
    assert took < 2.0  # the deadline, met within a tick (0.05 s) and the server's own pace
    assert closed  # the server let the connection go
    assert b"content-type: application/problem+json" in head_text.lower()
    problem = json.loads(body)
    assert problem["status"] == 408 and problem["error"]["code"] == "request_timeout"
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(r["action"], r["status"]) for r in records] == [("timeout", 408)]


# A refusal of this limit lasts 10 s (its interval): longer than a round of stalls takes
PER_IP = "{per: ip, rate: 6/minute, burst: 3}"
STALL_TIMEOUT = 1.0  # inspect_timeout of the stalling test: small, but above a loaded loop's pace


async def stalls(port: int, n: int, within: float) -> dict[int | None, int]:
    """``n`` stalled requests at once (headers and part of the body, then nothing): how many
    got which answer within ``within`` seconds."""
    held: list[socket.socket] = []
    deadline = asyncio.get_running_loop().time() + within
    statuses = await asyncio.gather(*(stall(port, "sk-stall", deadline, held) for _ in range(n)))
    for sock in held:
        sock.close()
    counts: dict[int | None, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return counts


async def test_bodies_that_never_finish_are_charged_and_then_refused_before_their_body(
    tmp_path: Path, storage: str
):
    # One address stalls body after body: each 408 used to charge nothing, so it could hold
    # connections every inspect_timeout for ever and still be served afterwards (before: every
    # round of stalled bodies 408, then a whole request 200; one audit record per 408).
    route = f"    inspect_timeout: {STALL_TIMEOUT:g}s\n"
    text = policy(PER_IP, route) + "audit: {sample_allowed: 0.0}\n"
    app = guarded(tmp_path, storage, text)
    async with served(app) as url:
        port = int(url.rsplit(":", 1)[1])
        within = STALL_TIMEOUT + 4.0
        first = await stalls(port, 3, within)  # the burst: timed out, each charged
        second = await stalls(port, 20, within)  # over the limit: refused by the storage
        started = time.monotonic()
        third = await stalls(port, 50, within)  # known refused: 429 before the body
        took = time.monotonic() - started
        whole = await post(port, "sk-other", b'{"model":"m"}')  # the same address
    await app.shutdown()
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    counted = sum(r.get("repeated", 1) for r in records)
    print(
        f"\n{storage.split(':')[0]}: stalled {first} then {second} then {third} "
        f"({took:.2f} s for the last 50, "
        f"inspect_timeout {STALL_TIMEOUT:g} s); a whole request then: {whole}; "
        f"{len(records)} audit records counting {counted} refusals (before: 73 records, "
        f"third round all 408, whole request 200)"
    )
    assert first == {408: 3} and second == {408: 20}
    assert third == {429: 50}
    assert took < STALL_TIMEOUT  # none waited for its body
    assert whole == 429  # the address is over its limit whatever key it sends
    assert counted == 3 + 20 + 50 + 1
    assert len(records) <= 8
    statuses = {(r["action"], r["status"]) for r in records}
    assert statuses == {("timeout", 408), ("limit", 429)}
