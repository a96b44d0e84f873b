"""The origin a client reached (scheme and host), for the absolute URLs handed back to it.

Behind a proxy that terminates TLS, the server sees ``http`` and perhaps an internal host name;
the proxy says what the client used in ``X-Forwarded-Proto`` / ``X-Forwarded-Host``, or in
``Forwarded``'s ``proto=`` and ``host=`` (RFC 7239). Those are believed only from a peer in
``identity.client_ip.trusted_proxies``, and only in the header family the policy reads the
client address from (``identity.client_ip.header``), as for the address itself. Otherwise the
request's own Host header and ``scope["scheme"]`` decide: a client that writes another Host
gets URLs to that host, which it chose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.types import Scope

from guardrail.forwarded import last_element

#: A host as it may appear in a URL: DNS labels or a bracketed IPv6 address, and a port.
_HOST = re.compile(
    r"(?:(?:[A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
)
_DEFAULT_PORT = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str  # as it goes in a URL: a name or [v6], and a port unless the default

    @property
    def hostname(self) -> str:
        """The host without its port, as a person reads it."""
        if self.host.startswith("["):
            return self.host[: self.host.index("]") + 1]
        return self.host.rsplit(":", 1)[0]

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}{path}"


def origin_of(scope: Scope, *, proxied: bool, header: str) -> Origin | None:
    """The origin the client sent ``scope`` to; None when no valid host is known (no Host
    header and no server address, or one that is not a host). ``proxied``: the peer is a
    trusted proxy; ``header``: ``x-forwarded-for`` or ``forwarded``, the one the proxies write."""
    scheme = str(scope.get("scheme") or "http")
    host: str | None = None
    forwarded: list[bytes] = []
    for name, value in scope.get("headers") or ():
        if name == b"host" and host is None:
            host = value.decode("latin-1")
        elif proxied and header == "forwarded" and name == b"forwarded":
            forwarded.append(value)
        elif proxied and header == "x-forwarded-for":
            if name == b"x-forwarded-proto":
                scheme = _last(value)
            elif name == b"x-forwarded-host":
                host = _last(value)
    if forwarded:
        params = last_element(forwarded)
        scheme = params.get("proto", scheme)
        host = params.get("host", host)
    scheme = scheme.lower()
    if scheme not in _DEFAULT_PORT:
        return None
    if host is None:
        server = scope.get("server")
        if not server or server[0] is None:
            return None
        address, port = str(server[0]), server[1]
        address = f"[{address}]" if ":" in address else address
        host = address if port in (None, _DEFAULT_PORT[scheme]) else f"{address}:{port}"
    if len(host) > 260 or not _HOST.fullmatch(host):
        return None
    return Origin(scheme, host)


def _last(value: bytes) -> str:
    # A proxy that appends (rather than sets) leaves the client's own value first.
    return value.decode("latin-1").rsplit(",", 1)[-1].strip()
