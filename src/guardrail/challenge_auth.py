"""An httpx auth flow that answers guardrail's proof-of-work challenges by itself.

On a 403 whose body is a guardrail challenge with ``pow``, ``ChallengeAuth`` solves it (for an
async client in a worker thread, a slice at a time, so the event loop keeps running and a
cancelled request stops solving), POSTs the answer to the verify endpoint with the request's
own headers (the clearance is bound to its API key, account and user agent), and sends the
request again, once, with the ``Guardrail-Clearance`` header. Later requests to the same
origin carry that clearance until it expires, is used up or is refused; a challenged request
that finds a clearance another request has won meanwhile is sent again with it, unsolved.

Anything else, a 403 that is not a challenge included, passes through untouched, and streamed
responses stay streamed: only a challenge's body is read. An answer the verify endpoint
refuses (a 429 on its own limits, a challenge expired meanwhile) ends the flow with that
endpoint's problem+json response.

The verify URL is the challenge's ``verify_url`` when it is on the request's own origin; else
the one its ``url`` implies on that origin. The request's headers (its API key) never go to
another host.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio.to_thread
import httpx

from guardrail.client import ChallengeFormatError, pow_of, search

__all__ = ["ChallengeAuth", "openai_async_http_client", "openai_http_client"]

HEADER = "Guardrail-Clearance"
#: Above this a challenge is passed through unsolved: 2^24 hashes are about 15 s of CPython.
MAX_DIFFICULTY = 24
#: Tries per thread hop of the async solver: tens of milliseconds, so a cancel lands soon.
SLICE = 1 << 16
#: A clearance this close to its expiry is not sent: it could expire on the way.
MARGIN = 5.0
#: Not copied from the request into the answer: they describe the request's own body.
_BODY_HEADERS = frozenset(
    {"content-length", "content-type", "content-encoding", "transfer-encoding", "host"}
)
_Origin = tuple[str, str, int | None]


@dataclass(slots=True)
class _Clearance:
    token: str
    expires_at: float
    left: int  # requests it still covers, as far as this client counted


@dataclass(frozen=True, slots=True)
class _Challenge:
    id: str
    seed: str
    difficulty: int
    verify_url: httpx.URL


class ChallengeAuth(httpx.Auth):
    """``httpx.Client(auth=ChallengeAuth())``; one instance may serve several clients and
    threads. ``max_difficulty``: harder challenges are passed through; ``clock``: seconds since
    the epoch, for the clearance's expiry."""

    requires_request_body = True  # the request is sent again once the challenge is passed

    def __init__(
        self, *, max_difficulty: int = MAX_DIFFICULTY, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_difficulty = max_difficulty
        self.clock = clock
        self._clearances: dict[_Origin, _Clearance] = {}
        self._lock = threading.Lock()

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        sent = self._attach(request)
        response = yield request
        if not _challenged(response):
            return
        response.read()
        challenge = self._challenge(request, response, sent)
        if challenge is None:
            return
        if self._attach(request) is not None:  # another request passed one meanwhile
            yield request
            return
        nonce = _solve(challenge)
        verified = yield self._answer(request, challenge, nonce)
        verified.read()
        if self._keep(request, verified):
            self._attach(request)
            yield request  # once: a second challenge is the caller's

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        sent = self._attach(request)
        response = yield request
        if not _challenged(response):
            return
        await response.aread()
        challenge = self._challenge(request, response, sent)
        if challenge is None:
            return
        if self._attach(request) is not None:
            yield request
            return
        nonce = await _solve_in_threads(challenge)
        verified = yield self._answer(request, challenge, nonce)
        await verified.aread()
        if self._keep(request, verified):
            self._attach(request)
            yield request

    def _attach(self, request: httpx.Request) -> str | None:
        """Put the origin's clearance on ``request``, if it has one still good; its token. (A
        request without one keeps whatever clearance its caller gave it.)"""
        now = self.clock()
        with self._lock:
            held = self._clearances.get(_origin(request.url))
            if held is None or held.left <= 0 or held.expires_at - MARGIN <= now:
                return None
            held.left -= 1
        request.headers[HEADER] = held.token
        return held.token

    def _challenge(
        self, request: httpx.Request, response: httpx.Response, sent: str | None
    ) -> _Challenge | None:
        """The proof-of-work challenge ``response`` carries, if this client should solve it."""
        if sent is not None:  # the clearance was refused: never send it again
            with self._lock:
                held = self._clearances.get(_origin(request.url))
                if held is not None and held.token == sent:
                    del self._clearances[_origin(request.url)]
        try:
            body = json.loads(response.content)
            seed, difficulty = pow_of(body)
            found = body["challenge"]
            challenge_id = found["id"]
        except (ValueError, TypeError, KeyError, ChallengeFormatError):
            return None  # a 403 that says challenge but is not one of ours
        if not isinstance(challenge_id, str) or difficulty > self.max_difficulty:
            return None
        verify_url = _verify_url(request.url, found)
        if verify_url is None:
            return None
        return _Challenge(challenge_id, seed, difficulty, verify_url)

    def _answer(self, request: httpx.Request, challenge: _Challenge, nonce: str) -> httpx.Request:
        headers = [(k, v) for k, v in request.headers.multi_items() if k not in _BODY_HEADERS]
        headers = [(k, v) for k, v in headers if k != HEADER.lower()]
        answer = {"challenge_id": challenge.id, "nonce": nonce}
        return httpx.Request(
            "POST",
            challenge.verify_url,
            headers=headers,
            json=answer,
            extensions=request.extensions,
        )

    def _keep(self, request: httpx.Request, verified: httpx.Response) -> bool:
        """Keep the clearance the verify endpoint granted; False when it granted none."""
        if verified.status_code != 200:
            return False
        try:
            grant = verified.json()
            token, until, limit = grant["clearance"], grant["expires_at"], grant["max_requests"]
            expires_at = datetime.fromisoformat(until).timestamp()
        except (ValueError, TypeError, KeyError):
            return False
        if not isinstance(token, str) or not isinstance(limit, int):
            return False
        with self._lock:
            self._clearances[_origin(request.url)] = _Clearance(token, expires_at, limit)
        return True


def _challenged(response: httpx.Response) -> bool:
    return (
        response.status_code == 403
        and response.headers.get("guardrail-action") == "challenge"
        and "json" in response.headers.get("content-type", "")
    )


def _origin(url: httpx.URL) -> _Origin:
    return (url.scheme, url.host, url.port)


def _verify_url(request_url: httpx.URL, challenge: dict[str, Any]) -> httpx.URL | None:
    """Where to POST the answer: on the request's own origin, never elsewhere."""
    absolute = challenge.get("verify_url")
    if isinstance(absolute, str):
        try:
            url = httpx.URL(absolute)
        except httpx.InvalidURL:
            url = None
        if url is not None and _origin(url) == _origin(request_url):
            return url
    page = challenge.get("url")  # {root}{prefix}/challenge/{id}
    if not isinstance(page, str) or not page.startswith("/") or "/challenge/" not in page:
        return None
    return request_url.copy_with(
        raw_path=(page.rsplit("/challenge/", 1)[0] + "/verify").encode(), fragment=None
    )


def _solve(challenge: _Challenge) -> str:
    start = 0
    while (nonce := search(challenge.seed, challenge.difficulty, start, SLICE)) is None:
        start += SLICE
    return nonce


async def _solve_in_threads(challenge: _Challenge) -> str:
    start = 0
    while True:
        nonce = await anyio.to_thread.run_sync(
            search, challenge.seed, challenge.difficulty, start, SLICE
        )
        if nonce is not None:
            return nonce
        start += SLICE


#: The OpenAI SDK's own defaults for its httpx client: long reads (models are slow), redirects.
_OPENAI_DEFAULTS: dict[str, Any] = {
    "timeout": httpx.Timeout(600.0, connect=5.0),
    "follow_redirects": True,
    "limits": httpx.Limits(max_connections=1000, max_keepalive_connections=100),
}


def openai_http_client(*, auth: ChallengeAuth | None = None, **kwargs: Any) -> httpx.Client:
    """An ``httpx.Client`` that answers challenges, for ``OpenAI(http_client=...)``; ``kwargs``
    go to ``httpx.Client`` (a transport, a timeout, ...)."""
    return httpx.Client(auth=auth or ChallengeAuth(), **{**_OPENAI_DEFAULTS, **kwargs})


def openai_async_http_client(
    *, auth: ChallengeAuth | None = None, **kwargs: Any
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that answers challenges, for ``AsyncOpenAI(http_client=...)``."""
    return httpx.AsyncClient(auth=auth or ChallengeAuth(), **{**_OPENAI_DEFAULTS, **kwargs})
