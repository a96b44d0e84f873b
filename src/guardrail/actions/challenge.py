"""The challenge action: 403 with what it takes to pass, never 429 (SDKs retry 429 alone).

An API client gets problem+json with the ``challenge`` object (SPEC §3); a browser (a GET that
accepts text/html) gets the challenge page itself: a form that guardrail's proof-of-work script
fills and submits to the verify endpoint (``verify``), a CAPTCHA's widget when one is offered.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.types import Scope, Send

from guardrail.actions import pow
from guardrail.actions.captcha import Provider
from guardrail.actions.problem import Headers, send_problem
from guardrail.audit import format_ts
from guardrail.paths import public_path
from guardrail.policy import Challenges

#: How long a challenge can be answered.
CHALLENGE_TTL = 300.0

#: The page runs guardrail's own script (and its worker) from this origin, nothing else...
_CSP = (
    b"default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'unsafe-inline'; "
    b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def csp(widget: Provider | None) -> bytes:
    """The page's policy: guardrail's own script and worker, and a CAPTCHA's widget when one is
    offered (the sources its provider documents), nothing else."""
    if widget is None:
        return _CSP
    src = widget.sources
    return (
        f"default-src 'none'; script-src 'self' {src}; worker-src 'self'; frame-src {src}; "
        f"connect-src {src}; style-src 'unsafe-inline' {src}; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ).encode()


#: The proof-of-work script, served at ``{prefix}/pow.js``.
POW_JS = (Path(__file__).parent / "static" / "pow.js").read_bytes()


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
            "pow": {"algorithm": pow.ALGORITHM, "difficulty": self.difficulty, "seed": self.seed},
        }


def issue(config: Challenges, secret: bytes, now: float, root: str = "") -> Challenge:
    """A fresh challenge; ``root``: the prefix the app is served under (``root_path``)."""
    return of(config, secret, secrets.token_urlsafe(18), now + CHALLENGE_TTL, root)


def of(
    config: Challenges, secret: bytes, challenge_id: str, expires_at: float, root: str = ""
) -> Challenge:
    """The challenge ``challenge_id`` names. Its proof-of-work seed is bound to the id by the
    policy secret, so the challenge page can be served from the id alone. Its URL starts with
    ``root``, the app's prefix, for a client behind a mount or a proxy's path prefix."""
    seed = hmac.new(secret, b"pow:" + challenge_id.encode(), hashlib.sha256).hexdigest()[:32]
    return Challenge(
        id=challenge_id,
        kinds=config.order,
        url=f"{root}{config.prefix}/challenge/{challenge_id}",
        expires_at=expires_at,
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
    send: Send,
    scope: Scope,
    *,
    challenge: Challenge,
    prefix: str,
    request_id: str,
    headers: Headers,
    widget: tuple[Provider, str] | None = None,
) -> None:
    """``prefix``: the challenge prefix as the client reaches it (``root_path`` first);
    ``widget``: a CAPTCHA offered on the page, and its sitekey."""
    common = [(b"guardrail-action", b"challenge"), (b"cache-control", b"no-store"), *headers]
    if wants_html(scope):
        here = public_path(scope)  # where the client goes back to, as it sent it
        if scope.get("query_string"):
            here += "?" + scope["query_string"].decode("latin-1")
        body = page(challenge, prefix, here, request_id, widget)
        await send_page(send, body, 403, common, widget=widget[0] if widget else None)
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


def relative(value: str) -> str | None:
    """``value`` if it is a path on this site: ``/``-rooted, not ``//`` (scheme-relative), no
    backslash (browsers read ``/\\host`` as ``//host``), no control characters; else None."""
    if (
        not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)
        or len(value) > 2048
    ):
        return None
    return value


def page(
    challenge: Challenge,
    prefix: str,
    redirect: str,
    request_id: str,
    widget: tuple[Provider, str] | None = None,
) -> bytes:
    """The challenge page: a form that guardrail's script fills with the proof of work and
    submits; with JavaScript off, it says what to do. ``redirect``: where to go back to (a
    path that is not ``relative`` goes to ``/``)."""
    e = html.escape
    redirect = relative(redirect) or "/"
    element = script = ""
    if widget is not None and widget[0].name in challenge.kinds:
        # The widget fills its token's field in this form; a person submits it
        provider, sitekey = widget
        element = f'<div class="{e(provider.widget)}" data-sitekey="{e(sitekey)}"></div>\n'
        script = f'<script src="{e(provider.script)}" async defer></script>\n'
    pow_script = f'<script src="{e(prefix)}/pow.js"></script>' if "pow" in challenge.kinds else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Checking your connection</title>
<style>body{{font:1.1rem/1.5 system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;
color:#111;background:#fff}}a{{color:#0645ad}}button{{font:inherit;padding:.4rem 1rem}}</style>
</head>
<body><main><h1>Checking your connection</h1>
<p>This service saw unusual traffic from your network and needs a moment of your browser's
work before it serves more requests. You will be taken back to the page you asked for.</p>
<form id="guardrail-pow" method="post" action="{e(prefix)}/verify"
 data-seed="{e(challenge.seed)}" data-difficulty="{challenge.difficulty}"
 data-worker="{e(prefix)}/pow.js">
<input type="hidden" name="challenge_id" value="{e(challenge.id)}">
<input type="hidden" name="redirect" value="{e(redirect)}">
{element}<label for="guardrail-nonce">Proof of work</label>
<input id="guardrail-nonce" name="nonce" inputmode="numeric" autocomplete="off" required>
<button type="submit">Continue</button>
</form>
<p id="guardrail-status" role="status" aria-live="polite"></p>
<noscript><p>This check needs JavaScript to compute a proof of work. Turn JavaScript on for
this site and reload, or solve it with another program (SHA-256 of
<code>{e(challenge.seed)}:&lt;nonce&gt;</code> starting with {challenge.difficulty} zero bits)
and enter the nonce above.</p></noscript>
<p>Request id: <code>{e(request_id)}</code></p></main>
{script}{pow_script}</body></html>
""".encode()


async def send_page(
    send: Send, body: bytes, status: int, headers: Headers, *, widget: Provider | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"content-security-policy", csp(widget)),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
