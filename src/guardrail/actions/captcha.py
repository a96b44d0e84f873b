"""CAPTCHA providers that speak the siteverify protocol (hCaptcha, Turnstile), over httpx.

A form POST of ``secret``, ``response``, ``remoteip`` and ``sitekey`` to ``verify_url``; the
answer is JSON with ``success``, ``hostname``, ``challenge_ts`` and ``error-codes``. A pass
also needs the hostname the token was solved on to be one of the policy's ``hostnames``
(without them: the host the client asked for, which only a browser cannot choose). The
secret goes in the request body and nowhere else: not in a message, a log line or a repr.
A provider is its widget and its defaults (``Provider``): one short module each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from guardrail.errors import GuardrailError
from guardrail.policy import Captcha
from guardrail.secrets import resolve_secret


@dataclass(frozen=True, slots=True)
class Provider:
    name: str  # as in challenges.order
    title: str  # for people: "hCaptcha"
    field: str  # the form field the widget fills with its token
    script: str  # the widget's script
    widget: str  # the class of the element the widget renders in
    sources: str  # CSP sources the widget needs (script, frame, connect, style)
    #: Published test sitekeys: their siteverify passes dummy tokens without reporting the
    #: host they were solved on, so that one check is skipped for them.
    test_sitekeys: frozenset[str] = frozenset()


#: What the widget's token may be at most: it is a few kilobytes; more is not a token.
MAX_TOKEN = 8192


class SiteverifyUnavailable(GuardrailError):
    """siteverify did not answer in time, or not in its protocol: ``on_error`` applies."""


@dataclass(frozen=True, slots=True)
class Verdict:
    success: bool
    error_codes: tuple[str, ...] = field(default=())

    @property
    def reason(self) -> str:
        return ", ".join(self.error_codes) or "not passed"


class Siteverify:
    def __init__(
        self, config: Captcha, provider: Provider, client: httpx.AsyncClient | None = None
    ) -> None:
        self.config = config
        self.provider = provider
        self._secret = resolve_secret(config.secret).decode("utf-8")
        self._client = client or httpx.AsyncClient(timeout=config.timeout)

    def __repr__(self) -> str:  # never the secret
        name, url, key = self.provider.name, self.config.verify_url, self.config.sitekey
        return f"Siteverify({name}, verify_url={url!r}, sitekey={key!r})"

    async def close(self) -> None:
        await self._client.aclose()

    async def check(self, token: str, *, remoteip: str, host: str) -> Verdict:
        """The verdict on ``token``, solved for a client at ``remoteip`` asking for ``host``."""
        if not token or len(token) > MAX_TOKEN:
            return Verdict(False, ("invalid-input-response",))
        form = {
            "secret": self._secret,
            "response": token,
            "remoteip": remoteip,
            "sitekey": self.config.sitekey,
        }
        try:
            response = await self._client.post(
                self.config.verify_url, data=form, timeout=self.config.timeout
            )
            answer = response.json()
        except httpx.TimeoutException as exc:
            timeout = self.config.timeout
            raise SiteverifyUnavailable(f"siteverify timed out after {timeout}s") from exc
        except (httpx.HTTPError, ValueError) as exc:
            raise SiteverifyUnavailable(f"siteverify failed: {type(exc).__name__}") from exc
        if not isinstance(answer, dict) or not isinstance(answer.get("success"), bool):
            status = response.status_code
            raise SiteverifyUnavailable(f"siteverify answered HTTP {status}, not its protocol")
        codes = answer.get("error-codes") or []
        error_codes = tuple(str(code) for code in codes) if isinstance(codes, list) else ()
        hostname = answer.get("hostname")
        hostname = hostname if isinstance(hostname, str) else None
        if answer["success"] is not True:
            return Verdict(False, error_codes)
        if self.config.sitekey in self.provider.test_sitekeys:
            return Verdict(True)
        if hostname is None or not self._solved_here(hostname.lower(), host.lower()):
            expected = ", ".join(self.config.hostnames) or host
            return Verdict(False, (f"hostname {hostname!r} is not {expected!r}",))
        return Verdict(True)

    def _solved_here(self, hostname: str, host: str) -> bool:
        configured = self.config.hostnames
        if not configured:
            return hostname == host
        # *.example.com: any subdomain of example.com, not example.com itself
        return any(
            hostname == name or (name[:2] == "*." and hostname.endswith(name[1:]))
            for name in configured
        )
