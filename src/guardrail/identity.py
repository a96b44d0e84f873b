"""Who is asking: API key (as a keyed hash), account, client IP behind trusted proxies, subnet.

``IdentityResolver.resolve`` runs on every request, so everything that can be is computed once in
``__init__`` and address parsing is memoised per distinct hop string.

What a client writes becomes storage keys and records, so each identity is bounded: API keys are
hashed, an account id longer than ``MAX_ACCOUNT`` characters is replaced by its keyed hash, and a
forwarding hop longer than any address is not read. Headers that name the client (forwarding
headers, the account header) are believed only from a trusted proxy.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from starlette.types import Scope

from guardrail.errors import GuardrailError
from guardrail.forwarded import forwarded_nodes, host_of, xff_nodes
from guardrail.secrets import PreparedHmac

__all__ = [
    "MAX_ACCOUNT",
    "AccountConfig",
    "ApiKeyConfig",
    "ClientIpConfig",
    "IdentityConfig",
    "IdentityResolver",
    "Subject",
    "SubnetConfig",
    "hash_key",
]

logger = logging.getLogger("guardrail.identity")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

UNKNOWN = "unknown"

#: An account id longer than this many characters is keyed and logged as its keyed hash (as API
#: keys are), so that a client cannot make storage keys and records of any size it likes.
MAX_ACCOUNT = 128

# policy.py owns the real models; these Protocols name only what is read here, so that this module
# never imports policy at runtime. Properties keep them satisfiable by frozen models.


class ApiKeyConfig(Protocol):
    @property
    def header(self) -> str: ...


class AccountConfig(Protocol):
    @property
    def header(self) -> str | None: ...

    @property
    def resolve(self) -> Callable[[Scope], str | None] | None: ...


class ClientIpConfig(Protocol):
    @property
    def trusted_proxies(self) -> Sequence[IPNetwork]: ...

    @property
    def header(self) -> str: ...  # "x-forwarded-for" or "forwarded"

    @property
    def ipv6_prefix(self) -> int: ...  # per-ip identity of an IPv6 client: its /64 by default


class SubnetConfig(Protocol):
    @property
    def ipv4_prefix(self) -> int: ...

    @property
    def ipv6_prefix(self) -> int: ...


class IdentityConfig(Protocol):
    @property
    def api_key(self) -> ApiKeyConfig | None: ...

    @property
    def account(self) -> AccountConfig | None: ...

    @property
    def client_ip(self) -> ClientIpConfig: ...

    @property
    def subnet(self) -> SubnetConfig: ...


def hash_key(secret: bytes, raw_key: str) -> str:
    """The keyed hash an API key is stored and logged as: ``"k:"`` + 32 hex of HMAC-SHA256."""
    return "k:" + hmac.digest(secret, raw_key.encode("utf-8"), "sha256").hex()[:32]


#: Keys whose hash is kept (``_KeyHasher``), each of at most KEPT_KEY_BYTES: ~1 MB at most
#: (a longer value, an account id a client made huge, is hashed every time: 4,096 of 64 KB
#: would hold 256 MB).
KEYS_KEPT = 4096
KEPT_KEY_BYTES = 256


class _KeyHasher:
    """``hash_key`` over bytes, with the HMAC pads hashed once, and the hashes of up to
    ``KEYS_KEPT`` keys kept: a client sends the same key request after request, and its HMAC
    was the identity's largest cost in a worker under load. The keys are held in this
    process only, as each request's headers hold them; never stored, logged or sent. A dict
    compares the whole key on a hash match, so no key can pass for another."""

    __slots__ = ("_known", "_mac")

    def __init__(self, secret: bytes) -> None:
        self._mac = PreparedHmac(secret)
        self._known: dict[bytes, str] = {}

    def __call__(self, raw_key: bytes) -> str:
        known = self._known
        hashed = known.get(raw_key)
        if hashed is None:
            hashed = "k:" + self._mac.hexdigest(raw_key)[:32]
            if len(raw_key) <= KEPT_KEY_BYTES:
                if len(known) >= KEYS_KEPT:
                    # all at once: evicting the oldest from a plain dict scans its freed slots
                    # each time (4.6 µs a miss), and a client sending random keys forces misses
                    known.clear()
                known[raw_key] = hashed
        return hashed


@dataclass(slots=True)
class Subject:
    """The identities of one request. ``api_key`` is always the keyed hash, never the key.

    ``ip`` is the client's address (audit, siteverify, ``allow.cidrs``). ``ip_key`` is what
    ``per: ip`` limits and a keyless risk principal key on when that is not the address itself:
    an IPv6 client's network (``identity.client_ip.ipv6_prefix``), which it can rotate inside.
    """

    api_key: str | None
    account: str | None
    ip: str
    subnet: str
    ip_key: str | None = None  # None: the address (IPv4, or ipv6_prefix 128)

    def as_dict(self) -> dict[str, str]:
        """The audit record's ``subject`` object (SPEC §4), without the members that are None."""
        out: dict[str, str] = {}
        if self.api_key is not None:
            out["api_key"] = self.api_key
        if self.account is not None:
            out["account"] = self.account
        out["ip"] = self.ip
        out["subnet"] = self.subnet
        return out


@dataclass(frozen=True, slots=True)
class _Addr:
    ip: str
    subnet: str
    trusted: bool
    key: str | None = None  # Subject.ip_key


# Bits of what a header name is wanted for; one name may serve several purposes. _PROBE: the
# X-Forwarded-For of a direct request, read only to see whether the server already applied it.
_KEY, _ACCOUNT, _FORWARDED, _XFF, _PROBE = 1, 2, 4, 8, 16

# Longer than any address with brackets, port and a sane zone id: refuse without parsing or caching.
_MAX_NODE = 100
#: A request that carries the account header twice: neither value is believed.
_AMBIGUOUS = b"\0ambiguous"
_CACHE_SIZE = 4096
_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


class IdentityResolver:
    """Turns an ASGI scope into a ``Subject`` according to the policy's ``identity`` block."""

    def __init__(self, config: IdentityConfig, secret: bytes) -> None:
        self._hash = _KeyHasher(bytes(secret))

        wanted: dict[bytes, int] = {}

        def want(name: str, bit: int) -> None:
            key = name.strip().lower().encode("latin-1")
            wanted[key] = wanted.get(key, 0) | bit

        if config.api_key is not None:
            want(config.api_key.header, _KEY)

        # The account header names the principal (its limits, its risk, `allow.accounts`), so
        # like a forwarding header it is read only from a trusted proxy that sets it.
        self._account_of: Callable[[Scope], str | None] | None = None
        self._warned = False
        self._opaque_warned = False
        account = config.account
        account_header: str | None = None
        if account is not None:
            # getattr: a header-based account model may not carry `resolve` at all.
            resolve: Callable[[Scope], str | None] | None = getattr(account, "resolve", None)
            if resolve is not None:
                self._account_of = resolve
            elif account.header:
                account_header = account.header
        # A server that applies X-Forwarded-For itself (uvicorn's proxy_headers) hands over a
        # client address the client wrote; direct requests are probed until that is seen.
        self._wanted_plain = dict(wanted)
        want("x-forwarded-for", _PROBE)
        self._wanted_direct = dict(wanted)
        wanted = dict(self._wanted_plain)
        if account_header is not None:
            want(account_header, _ACCOUNT)

        # Exactly one forwarding header is read: the one the proxies write. Reading both lets a
        # client send the other one through a proxy that only appends to its own, and choose
        # its address (nginx appends to X-Forwarded-For and passes Forwarded through untouched).
        header = config.client_ip.header
        if header == "forwarded":
            want("forwarded", _FORWARDED)
        elif header == "x-forwarded-for":
            want("x-forwarded-for", _XFF)
        else:
            raise GuardrailError(
                f"client_ip.header {header!r}: expected x-forwarded-for or forwarded"
            )
        self._wanted_proxied = wanted
        self._reads_xff = header == "x-forwarded-for"

        v4_prefix, v6_prefix = config.subnet.ipv4_prefix, config.subnet.ipv6_prefix
        if not 0 <= v4_prefix <= 32:
            raise GuardrailError(f"identity.subnet.ipv4_prefix must be 0..32, got {v4_prefix!r}")
        if not 0 <= v6_prefix <= 128:
            raise GuardrailError(f"identity.subnet.ipv6_prefix must be 0..128, got {v6_prefix!r}")
        self._v4_prefix, self._v6_prefix = v4_prefix, v6_prefix
        self._v4_mask = (0xFFFFFFFF << (32 - v4_prefix)) & 0xFFFFFFFF
        self._v6_mask = ((1 << 128) - 1) ^ ((1 << (128 - v6_prefix)) - 1)
        ip_prefix = config.client_ip.ipv6_prefix
        if not 0 <= ip_prefix <= 128:
            raise GuardrailError(
                f"identity.client_ip.ipv6_prefix must be 0..128, got {ip_prefix!r}"
            )
        self._ip_prefix = ip_prefix
        self._ip_mask = ((1 << 128) - 1) ^ ((1 << (128 - ip_prefix)) - 1)

        # Single addresses go in a set (one lookup); real networks are scanned as (base, mask) ints.
        # Mapped networks (::ffff:a.b.c.d/n) are rewritten as IPv4, since addresses are normalised.
        v4_hosts: set[int] = set()
        v6_hosts: set[int] = set()
        v4_nets: list[tuple[int, int]] = []
        v6_nets: list[tuple[int, int]] = []
        for net in config.client_ip.trusted_proxies:
            if (
                isinstance(net, ipaddress.IPv6Network)
                and net.prefixlen >= 96
                and net.subnet_of(_V4_MAPPED)
            ):
                net = ipaddress.IPv4Network(
                    (int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96)
                )
            base, mask = int(net.network_address), int(net.netmask)
            if isinstance(net, ipaddress.IPv4Network):
                if net.prefixlen == 32:
                    v4_hosts.add(base)
                else:
                    v4_nets.append((base, mask))
            elif net.prefixlen == 128:
                v6_hosts.add(base)
            else:
                v6_nets.append((base, mask))
        self._v4_hosts, self._v6_hosts = frozenset(v4_hosts), frozenset(v6_hosts)
        self._v4_nets, self._v6_nets = tuple(v4_nets), tuple(v6_nets)

        self._parse = functools.lru_cache(maxsize=_CACHE_SIZE)(self._parse_node)
        # IPv6 text formatting is slow and many clients share a subnet.
        self._v6_subnet = functools.lru_cache(maxsize=_CACHE_SIZE)(self._format_v6_subnet)
        self._v6_key = functools.lru_cache(maxsize=_CACHE_SIZE)(self._format_v6_key)

    def resolve(self, scope: Scope) -> Subject:
        """The subject of one request. Never raises on what a client can send."""
        client = scope.get("client")
        peer_host = client[0] if client else None
        peer: _Addr | None = None
        if isinstance(peer_host, str):
            peer = self._lookup(peer_host)
        proxied = peer is not None and peer.trusted

        raw_key: bytes | None = None
        raw_account: bytes | None = None
        forwarded: list[bytes] = []
        xff: list[bytes] = []
        probe: bytes | None = None
        wanted = self._wanted_proxied if proxied else self._wanted_direct
        if wanted:
            for name, value in scope.get("headers", ()):
                bits = wanted.get(name)
                if bits is None:
                    continue
                if bits & _KEY and raw_key is None:
                    raw_key = value
                if bits & _ACCOUNT:
                    # Two values: a proxy that adds its header after the client's (Envoy and
                    # HAProxy add-header) leaves the client's first. Neither is believed.
                    raw_account = value if raw_account is None else _AMBIGUOUS
                if bits & _FORWARDED:
                    forwarded.append(value)
                if bits & _XFF:
                    xff.append(value)
                if bits & _PROBE:
                    probe = value if probe is None else probe + b"," + value
            if probe is not None and peer is not None and client:
                self._probe(probe, client)

        api_key: str | None = None
        if raw_key is not None:
            token = _strip_bearer(raw_key)
            if token:
                api_key = self._hash(token)

        account: str | None = None
        if self._account_of is not None:
            account = self._call_account_of(self._account_of, scope)
        elif raw_account is not None and raw_account is not _AMBIGUOUS:
            raw_account = raw_account.strip()
            if len(raw_account) > MAX_ACCOUNT:
                account = self._hash(raw_account)
            else:
                # latin-1 never fails and matches what Starlette's request.headers shows the app.
                account = raw_account.decode("latin-1") or None

        if peer is None:
            ip = self._opaque(peer_host) if isinstance(peer_host, str) and peer_host else UNKNOWN
            return Subject(api_key, account, ip, ip)
        if proxied:
            nodes = forwarded_nodes(forwarded) if forwarded else xff_nodes(xff) if xff else None
            if nodes:
                peer = self._walk(nodes, peer)
        return Subject(api_key, account, peer.ip, peer.subnet, peer.key)

    def peer_trusted(self, scope: Scope) -> bool:
        """Is the request's peer a trusted proxy, whose forwarding headers are believed?"""
        client = scope.get("client")
        peer = self._lookup(client[0]) if client and isinstance(client[0], str) else None
        return peer is not None and peer.trusted

    def _opaque(self, host: str) -> str:
        """A client "address" that is none: a unix socket's name, a test client's, or a
        client-written X-Forwarded-For a server put in ``scope["client"]``. It names one
        client; a long one is kept as its keyed hash, so that it cannot make keys of any size."""
        if not self._opaque_warned:
            self._opaque_warned = True
            logger.warning(
                "guardrail: the client address %r is not an IP address: per-ip and per-subnet "
                "limits and the risk engine treat each such value as one client. If the server "
                "put a forwarding header there, run it without its own proxy handling "
                "(uvicorn --no-proxy-headers) and list the proxies in trusted_proxies",
                host[:64],
            )
        if len(host) > _MAX_NODE:
            return "h:" + self._hash(host.encode("utf-8", "surrogatepass"))[2:]
        return host

    def subnet_of(self, ip: str) -> str:
        """The subnet string for an address; anything that is not an address is its own subnet."""
        addr = self._lookup(ip)
        return ip if addr is None else addr.subnet

    def _call_account_of(
        self, account_of: Callable[[Scope], str | None], scope: Scope
    ) -> str | None:
        try:
            result = account_of(scope)
        except Exception:
            # An app bug must not take the request down; say so once, not on every request.
            if not self._warned:
                self._warned = True
                logger.warning(
                    "identity.account callable raised; treating account as unknown", exc_info=True
                )
            return None
        if result is None or isinstance(result, str):
            if result is not None and len(result) > MAX_ACCOUNT:
                return self._hash(result.encode("utf-8", "surrogatepass"))
            return result or None
        if not self._warned:
            self._warned = True
            logger.warning(
                "identity.account callable returned %s, not str or None; ignored",
                type(result).__name__,
            )
        return None

    def _probe(self, xff: bytes, client: Sequence[object]) -> None:
        """Warn once when the peer is a hop of the request's own X-Forwarded-For: the server
        took the client address from the header before guardrail saw the request. Quiet when
        guardrail would have concluded the same (the server trusts the proxies it trusts)."""
        peer_host, peer_port = client[0], client[1]
        nodes = xff_nodes([xff])
        for i in range(len(nodes) - 1, -1, -1):
            node = nodes[i]
            if node is None or len(node) > _MAX_NODE or host_of(node) != peer_host:
                continue
            if peer_port != 0 and not node.endswith(f":{peer_port}"):
                continue  # a real TCP source port: the server did not take it from the header
            right = [self._lookup(hop) if hop is not None else None for hop in nodes[i + 1 :]]
            if (
                self._reads_xff
                and (self._v4_hosts or self._v6_hosts or self._v4_nets or self._v6_nets)
                and all(hop is not None and hop.trusted for hop in right)
            ):
                return
            self._wanted_direct = self._wanted_plain  # said once; stop probing
            logger.warning(
                "guardrail: the server set the client address from the request's own "
                "X-Forwarded-For (%s) before guardrail saw it: per-ip limits and keyless risk "
                "follow whatever a client writes there. uvicorn does this by default for peers "
                "in --forwarded-allow-ips (127.0.0.1): run it with --no-proxy-headers "
                "(proxy_headers=False) and let identity.client_ip.trusted_proxies decide, or "
                "give --forwarded-allow-ips exactly the proxies in trusted_proxies.",
                peer_host,
            )
            return

    def _walk(self, nodes: list[str | None], peer: _Addr) -> _Addr:
        # Each proxy appends the address it saw, so the trustworthy end is the right one.
        best = peer
        for node in reversed(nodes):
            hop = None if node is None or len(node) > _MAX_NODE else self._parse(node)
            if hop is None:
                return best
            if not hop.trusted:
                return hop
            best = hop
        return best

    def _lookup(self, node: str) -> _Addr | None:
        if len(node) > _MAX_NODE:
            return None
        return self._parse(node)

    def _parse_node(self, node: str) -> _Addr | None:
        host = host_of(node)
        if host is None or not host.isascii():
            return None
        if ":" not in host:
            # Dotted quads are parsed by hand: ipaddress takes several times as long.
            n = _v4_int(host)
            return None if n is None else self._v4(host, n)
        try:
            addr = ipaddress.IPv6Address(host)
        except ValueError:
            return None
        mapped = addr.ipv4_mapped
        if mapped is not None:
            return self._v4(str(mapped), int(mapped))
        n = int(addr)
        trusted = n in self._v6_hosts or any((n & m) == b for b, m in self._v6_nets)
        key = None if self._ip_prefix == 128 else self._v6_key(n & self._ip_mask)
        return _Addr(str(addr), self._v6_subnet(n & self._v6_mask), trusted, key)

    def _v4(self, ip: str, n: int) -> _Addr:
        trusted = n in self._v4_hosts or any((n & m) == b for b, m in self._v4_nets)
        s = n & self._v4_mask
        subnet = f"{s >> 24}.{(s >> 16) & 255}.{(s >> 8) & 255}.{s & 255}/{self._v4_prefix}"
        return _Addr(ip, subnet, trusted)

    def _format_v6_subnet(self, base: int) -> str:
        return f"{ipaddress.IPv6Address(base)}/{self._v6_prefix}"

    def _format_v6_key(self, base: int) -> str:
        return f"{ipaddress.IPv6Address(base)}/{self._ip_prefix}"


def _v4_int(host: str) -> int | None:
    """A dotted quad as ipaddress accepts it (four decimal octets, no leading zeros), or None."""
    parts = host.split(".")
    if len(parts) != 4:
        return None
    n = 0
    for part in parts:
        if not part.isdigit() or len(part) > 3 or (part[0] == "0" and len(part) > 1):
            return None
        octet = int(part)
        if octet > 255:
            return None
        n = (n << 8) | octet
    return n


def _strip_bearer(value: bytes) -> bytes:
    value = value.strip()
    if value[:6].lower() == b"bearer" and (len(value) == 6 or value[6] in b" \t"):
        return value[6:].lstrip()
    return value
