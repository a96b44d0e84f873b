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
from guardrail.origin import Origin
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

    def as_dict(self, verify_url: str | None = None) -> dict[str, Any]:
        """The 403 body's ``challenge`` (SPEC §3), and ``verify_url``, the verify endpoint's
        absolute URL, when the origin the client reached is known."""
        out: dict[str, Any] = {
            "id": self.id,
            "kinds": list(self.kinds),
            "url": self.url,
            "expires_at": format_ts(self.expires_at),
            "pow": {"algorithm": pow.ALGORITHM, "difficulty": self.difficulty, "seed": self.seed},
        }
        if verify_url is not None:
            out["verify_url"] = verify_url
        return out


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
    origin: Origin | None = None,
    site: str | None = None,
) -> None:
    """``prefix``: the challenge prefix as the client reaches it (``root_path`` first);
    ``widget``: a CAPTCHA offered on the page, and its sitekey; ``origin``: the one the client
    reached, for absolute URLs; ``site``: the name the page shows."""
    common = [(b"guardrail-action", b"challenge"), (b"cache-control", b"no-store"), *headers]
    if wants_html(scope):
        here = public_path(scope)  # where the client goes back to, as it sent it
        if scope.get("query_string"):
            here += "?" + scope["query_string"].decode("latin-1")
        body = page(challenge, prefix, here, request_id, widget, site=site)
        await send_page(send, body, 403, common, widget=widget[0] if widget else None)
        return
    verify_url = origin.url(f"{prefix}/verify") if origin is not None else None
    where = origin.url(challenge.url) if origin is not None else challenge.url
    await send_problem(
        send,
        403,
        problem="abnormal-usage-detected",
        title="Forbidden",
        detail=(
            "Unusual traffic from this client: a challenge must be passed before more "
            f"requests are served. Open {where} in a browser, or solve the proof of "
            f"work in `challenge.pow` and POST it to {verify_url or 'the verify endpoint'}; "
            "then retry with the clearance in the Guardrail-Clearance header."
        ),
        error_type="challenge_required",
        request_id=request_id,
        headers=common,
        extra={"challenge": challenge.as_dict(verify_url)},
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
    *,
    site: str | None = None,
) -> bytes:
    """The challenge page: a form that guardrail's script fills with the proof of work and
    submits, showing its progress meanwhile; with JavaScript off, a form to enter the nonce by
    hand and how to compute it. ``redirect``: where to go back to (a path that is not
    ``relative`` goes to ``/``); ``site``: the name the page gives the site."""
    e = html.escape
    redirect = relative(redirect) or "/"
    name = e(site) if site else ""
    title = f"Checking your connection to {name}" if name else "Checking your connection"
    element = script = button = ""
    if widget is not None and widget[0].name in challenge.kinds:
        # The widget fills its token's field in this form; a person submits it
        provider, sitekey = widget
        element = f'<div class="{e(provider.widget)}" data-sitekey="{e(sitekey)}"></div>\n'
        script = f'<script src="{e(provider.script)}" async defer></script>\n'
        button = '<button type="submit">Continue</button>\n'
    fields = (
        f'<input type="hidden" name="challenge_id" value="{e(challenge.id)}">\n'
        f'<input type="hidden" name="redirect" value="{e(redirect)}">\n'
    )
    pow_script = progress = manual = ""
    if "pow" in challenge.kinds:
        pow_script = f'<script src="{e(prefix)}/pow.js"></script>'
        expected = f"{1 << challenge.difficulty:,}"
        # Shown by the script once its worker runs: with JavaScript off it stays hidden
        progress = f"""<div id="guardrail-progress" hidden>
<progress id="guardrail-bar" max="1" value="0"></progress>
<p id="guardrail-count" class="small">Starting… (about {expected} tries expected)</p>
</div>
"""
        seed, bits = e(challenge.seed), challenge.difficulty
        manual = f"""<noscript><section>
<h2>Without JavaScript</h2>
<p>Your browser does not run scripts here, so the check cannot run by itself. Turn
JavaScript on for {name or "this site"} and reload, or compute the answer yourself: a number
<var>n</var> (decimal digits) such that SHA-256 of <code>{seed}:<var>n</var></code> starts
with {bits} zero bits (about {expected} tries). For example:</p>
<pre>python3 -c 'import hashlib, itertools
seed, bits = b"{seed}", {bits}
print(next(n for n in itertools.count() if int.from_bytes(
  hashlib.sha256(seed + b":%d" % n).digest(), "big") &gt;&gt; (256 - bits) == 0))'</pre>
<form method="post" action="{e(prefix)}/verify">
{fields}<label for="guardrail-nonce">Answer (<var>n</var>)</label>
<input id="guardrail-nonce" name="nonce" inputmode="numeric" autocomplete="off" required>
<button type="submit">Continue</button>
</form>
</section></noscript>
"""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font:1.05rem/1.55 system-ui,sans-serif;max-width:38rem;margin:3rem auto;
padding:0 1rem;color:#1b1b1f;background:#fff}}h1{{font-size:1.6rem;margin:.2rem 0 1rem}}
h2{{font-size:1.15rem;margin-top:1.6rem}}a{{color:#0645ad}}
button,input{{font:inherit;padding:.35rem .6rem}}.site{{color:#555;margin:0;font-weight:600}}
.small{{font-size:.9rem;color:#444}}progress{{width:100%;height:.8rem;accent-color:#2457c5}}
pre{{background:#f4f4f6;padding:.7rem;overflow-x:auto;font-size:.8rem}}
code{{font-size:.9em;word-break:break-all}}#guardrail-status{{font-weight:600}}
#guardrail-count{{margin-top:.2rem}}</style>
</head>
<body><main>{f'<p class="site">{name}</p>' if name else ""}
<h1>Checking your connection</h1>
<p>{name or "This site"} saw unusual traffic from your network, so before it serves more
requests it asks your browser for a few seconds of work: a small computation, cheap for one
person, costly for software that sends requests by the thousand. Nothing is installed and
the page sends nothing but the answer; then you are taken back to the page you asked for.</p>
<p id="guardrail-status" role="status" aria-live="polite"></p>
{progress}<form id="guardrail-pow" method="post" action="{e(prefix)}/verify"
 data-seed="{e(challenge.seed)}" data-difficulty="{challenge.difficulty}"
 data-worker="{e(prefix)}/pow.js">
{fields}<input type="hidden" name="nonce" value="">
{element}{button}</form>
{manual}<p class="small">Request id: <code>{e(request_id)}</code></p></main>
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
