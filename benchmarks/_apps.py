"""The apps and policies the benchmarks measure: overhead.py calls them in process, load.py
serves them with uvicorn (``uvicorn --factory _apps:memory``, with ``benchmarks`` on the path).

The load factories differ from what overhead.py builds in two ways only: their endpoint reads
the request body, as a model server's does (in process nothing reads it unless guardrail
inspects it; over a socket the server has it either way), and guardrail reads the real clock.
Redis configurations take their URL from ``GUARDRAIL_BENCH_REDIS``.
"""

from __future__ import annotations

import itertools
import os

from slowapi import Limiter
from slowapi.util import get_remote_address
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from guardrail import Guardrail, Policy

from _requests import PATH

POLICY = """
version: 1
secret: env:GUARDRAIL_BENCH_SECRET
audit: {sink: "stdout://"}
routes:
  - name: inference
    match: {path: /v1/}
    limits:
      - {per: api_key, rate: 1000000000/second}
      - {per: ip, rate: 1000000000/second}
      - {per: subnet, rate: 1000000000/second}
"""


RISK_POLICY = """
version: 1
secret: env:GUARDRAIL_BENCH_SECRET
audit: {sink: "stdout://"}
identity:
  api_key: {header: authorization}
routes:
  - name: inference
    match: {path: /v1/}
    inspect: openai
    limits:
      - {per: api_key, rate: 1000000000/second}
      - {per: ip, rate: 1000000000/second}
      - {per: subnet, rate: 1000000000/second}
thresholds:
  - {score: 100, action: block}
"""

#: The three buckets and ``inspect: openai``, without the risk engine (no thresholds).
INSPECT_POLICY = RISK_POLICY.partition("thresholds:")[0]


def bare_app(read_body: bool = False) -> Starlette:
    async def endpoint(request: Request) -> PlainTextResponse:
        if read_body:
            await request.body()
        return PlainTextResponse("ok")

    return Starlette(routes=[Route(PATH, endpoint, methods=["POST"])])


def slowapi_app(read_body: bool = False) -> Starlette:
    limiter = Limiter(key_func=get_remote_address, storage_uri="memory://")

    @limiter.limit("1000000000/second")
    async def endpoint(request: Request) -> PlainTextResponse:
        if read_body:
            await request.body()
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route(PATH, endpoint, methods=["POST"])])
    app.state.limiter = limiter
    return app


class Floor:
    """What any middleware that inspects the body does on every request, and nothing else: the
    body read and replayed to the app, one response header (guardrail's request id). The
    least a pure ASGI middleware in guardrail's place costs (load.py's ``floor``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.served = itertools.count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = (b"guardrail-request-id", b"%x" % next(self.served))
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        await self.app(scope, replay, wrapped)


# The factories uvicorn serves (``--factory``): one per configuration of load.py.


def bare() -> Starlette:
    return bare_app(read_body=True)


def slowapi() -> Starlette:
    return slowapi_app(read_body=True)


def floor() -> Floor:
    return Floor(bare_app(read_body=True))


def _guardrail(policy: str, redis: bool) -> Guardrail:
    storage = os.environ["GUARDRAIL_BENCH_REDIS"] if redis else None
    return Guardrail(bare_app(read_body=True), policy=Policy.from_string(policy), storage=storage)


def memory() -> Guardrail:
    return _guardrail(INSPECT_POLICY, redis=False)


def redis() -> Guardrail:
    return _guardrail(INSPECT_POLICY, redis=True)


def risk_memory() -> Guardrail:
    return _guardrail(RISK_POLICY, redis=False)


def risk_redis() -> Guardrail:
    """The risk state shared through Redis every 50ms (the default)."""
    return _guardrail(RISK_POLICY, redis=True)


def risk_redis_200ms() -> Guardrail:
    """The risk state shared through Redis every 200ms."""
    policy = RISK_POLICY.replace("thresholds:", "risk: {share_every: 200ms}\nthresholds:")
    return _guardrail(policy, redis=True)


def risk_redis_each_request() -> Guardrail:
    """The risk state read and written in Redis on every request (``share_every: request``)."""
    policy = RISK_POLICY.replace("thresholds:", "risk: {share_every: request}\nthresholds:")
    return _guardrail(policy, redis=True)
