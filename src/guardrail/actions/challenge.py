"""The challenge action: 403 with what it takes to pass, never 429 (SDKs retry 429 alone).

An API client gets problem+json with the ``challenge`` object (SPEC §3); a browser (a GET that
accepts text/html) gets a page saying what to do. The page and endpoints that solve a
challenge live under ``challenges.prefix`` (see the challenge module of 0.3).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import secrets
from dataclasses import dataclass
from typing import Any

from starlette.types import Scope, Send

from guardrail.actions.problem import Headers, send_problem
from guardrail.audit import format_ts
from guardrail.policy import Challenges

#: How long a challenge can be answered.
CHALLENGE_TTL = 300.0

_CSP = (
    b"default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self'; "
    b"frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class Challenge:
    id: str
    kinds: tuple[str, ...]
    url: str
    expires_at: float
    difficulty: int
    seed: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kinds": list(self.kinds),
            "url": self.url,
            "expires_at": format_ts(self.expires_at),
            "pow": {"algorithm": "sha256", "difficulty": self.difficulty, "seed": self.seed},
        }


def issue(config: Challenges, secret: bytes, now: float) -> Challenge:
    """A fresh challenge. The proof-of-work seed is bound to the id by the policy secret."""
    challenge_id = secrets.token_urlsafe(18)
    seed = hmac.new(secret, b"pow:" + challenge_id.encode(), hashlib.sha256).hexdigest()[:32]
    return Challenge(
        id=challenge_id,
        kinds=config.order,
        url=f"{config.prefix}/challenge/{challenge_id}",
        expires_at=now + CHALLENGE_TTL,
        difficulty=config.pow.difficulty,
        seed=seed,
    )


def wants_html(scope: Scope) -> bool:
    if scope.get("method") != "GET":
        return False
    for name, value in scope.get("headers") or ():
        if name == b"accept":
            return b"text/html" in value
    return False


async def send_challenge(
    send: Send, scope: Scope, *, challenge: Challenge, request_id: str, headers: Headers
) -> None:
    common = [(b"guardrail-action", b"challenge"), (b"cache-control", b"no-store"), *headers]
    if wants_html(scope):
        await _send_page(send, challenge, request_id, common)
        return
    await send_problem(
        send,
        403,
        problem="abnormal-usage-detected",
        title="Forbidden",
        detail=(
            "Unusual traffic from this client: a challenge must be passed before more "
            f"requests are served. Open {challenge.url} in a browser, or solve the proof of "
            "work in `challenge.pow` and POST it to the verify endpoint; then retry."
        ),
        error_type="challenge_required",
        request_id=request_id,
        headers=common,
        extra={"challenge": challenge.as_dict()},
    )


async def _send_page(send: Send, challenge: Challenge, request_id: str, headers: Headers) -> None:
    url = html.escape(challenge.url)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Checking your connection</title>
<style>body{{font:1.1rem/1.5 system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;
color:#111;background:#fff}}a{{color:#0645ad}}</style></head>
<body><main><h1>Checking your connection</h1>
<p>This service saw unusual traffic from your network and needs to check that you are a
person before it serves more requests.</p>
<p><a href="{url}">Continue to the check</a>. It expires at
{html.escape(format_ts(challenge.expires_at))}.</p>
<p>Request id: <code>{html.escape(request_id)}</code></p></main></body></html>
""".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(page)).encode()),
                (b"content-security-policy", _CSP),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": page})
