from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.types import Scope

from guardrail import identity
from guardrail.errors import GuardrailError
from guardrail.identity import MAX_ACCOUNT, IdentityResolver, Subject, hash_key
from guardrail.policy import Policy

SECRET = b"test-secret"


@dataclass(frozen=True)
class ApiKey:
    header: str = "authorization"


@dataclass(frozen=True)
class Account:
    header: str | None = None
    resolve: Callable[[Scope], str | None] | None = None


@dataclass(frozen=True)
class ClientIp:
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    header: str = "x-forwarded-for"
    ipv6_prefix: int = 64


@dataclass(frozen=True)
class Subnet:
    ipv4_prefix: int = 24
    ipv6_prefix: int = 48


@dataclass(frozen=True)
class Identity:
    api_key: ApiKey | None = field(default_factory=ApiKey)
    account: Account | None = None
    client_ip: ClientIp = field(default_factory=ClientIp)
    subnet: Subnet = field(default_factory=Subnet)


def proxies(*cidrs: str, header: str = "x-forwarded-for") -> ClientIp:
    return ClientIp(tuple(ip_network(c) for c in cidrs), header)


def resolver(
    *trusted: str, secret: bytes = SECRET, header: str = "x-forwarded-for", **fields: Any
) -> IdentityResolver:
    return IdentityResolver(Identity(client_ip=proxies(*trusted, header=header), **fields), secret)


def scope(
    peer: str | None = "198.51.100.7",
    headers: Sequence[tuple[str | bytes, str | bytes]] = (),
) -> Scope:
    def b(text: str | bytes) -> bytes:
        return text if isinstance(text, bytes) else text.encode("latin-1")

    return {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b(name).lower(), b(value)) for name, value in headers],
        "client": None if peer is None else (peer, 50000),
    }


LOCAL = ("127.0.0.1/32", "10.0.0.0/8", "::1/128", "fd00::/8")


# -- client ip: X-Forwarded-For -------------------------------------------------------------


@pytest.mark.parametrize(
    ("trusted", "peer", "xff", "expected"),
    [
        pytest.param((), "198.51.100.7", ["203.0.113.9"], "198.51.100.7", id="nothing-trusted"),
        pytest.param(LOCAL, "198.51.100.7", ["203.0.113.9"], "198.51.100.7", id="untrusted-peer"),
        pytest.param(LOCAL, "127.0.0.1", [], "127.0.0.1", id="trusted-peer-no-header"),
        pytest.param(LOCAL, "127.0.0.1", ["203.0.113.9"], "203.0.113.9", id="trusted-peer"),
        pytest.param(
            LOCAL, "10.1.2.3", ["203.0.113.9, 10.0.0.5"], "203.0.113.9", id="cidr-peer-skip-hop"
        ),
        pytest.param(
            LOCAL,
            "127.0.0.1",
            ["6.6.6.6, 203.0.113.9, 10.0.0.5, 10.9.9.9"],
            "203.0.113.9",
            id="spoofed-left-ignored",
        ),
        pytest.param(
            LOCAL, "127.0.0.1", ["10.0.0.1, 10.0.0.2, 127.0.0.1"], "10.0.0.1", id="all-trusted"
        ),
        pytest.param(
            LOCAL,
            "127.0.0.1",
            ["6.6.6.6", "203.0.113.9, 10.0.0.5"],
            "203.0.113.9",
            id="several-lines-joined-in-order",
        ),
        pytest.param(
            LOCAL, "127.0.0.1", ["203.0.113.9", "10.0.0.5"], "203.0.113.9", id="lines-then-hop"
        ),
        pytest.param(LOCAL, "127.0.0.1", ["203.0.113.9:4711"], "203.0.113.9", id="v4-port"),
        pytest.param(LOCAL, "127.0.0.1", ["[2001:db8::1]:80"], "2001:db8::1", id="v6-port"),
        pytest.param(LOCAL, "127.0.0.1", ["2001:DB8:0::1"], "2001:db8::1", id="v6-normalised"),
        pytest.param(LOCAL, "::1", ["203.0.113.9"], "203.0.113.9", id="v6-peer"),
        pytest.param(LOCAL, "127.0.0.1", ["::ffff:203.0.113.9"], "203.0.113.9", id="mapped-hop"),
        pytest.param(LOCAL, "::ffff:127.0.0.1", ["203.0.113.9"], "203.0.113.9", id="mapped-peer"),
        pytest.param(LOCAL, "127.0.0.1", [""], "127.0.0.1", id="empty-header"),
        pytest.param(LOCAL, "127.0.0.1", [" , 203.0.113.9 ,"], "203.0.113.9", id="empty-elems"),
        pytest.param(LOCAL, "127.0.0.1", ["garbage"], "127.0.0.1", id="garbage"),
        pytest.param(LOCAL, "127.0.0.1", ["unknown"], "127.0.0.1", id="unknown"),
        pytest.param(
            LOCAL,
            "127.0.0.1",
            ["203.0.113.9, garbage, 10.0.0.5"],
            "10.0.0.5",
            id="garbage-stops-at-last-good-hop",
        ),
        pytest.param(
            LOCAL,
            "127.0.0.1",
            ["203.0.113.9, 10.0.0.5, garbage"],
            "127.0.0.1",
            id="garbage-right-of-chain-keeps-peer",
        ),
        pytest.param(LOCAL, "127.0.0.1", ["1.2.3.4:port"], "127.0.0.1", id="bad-port"),
        pytest.param(LOCAL, "127.0.0.1", ["1.2.3.4:123456"], "127.0.0.1", id="long-port"),
        pytest.param(LOCAL, "127.0.0.1", ["[2001:db8::1"], "127.0.0.1", id="open-bracket"),
        pytest.param(LOCAL, "127.0.0.1", ["[2001:db8::1]x"], "127.0.0.1", id="after-bracket"),
        pytest.param(LOCAL, "127.0.0.1", ["010.0.0.1"], "127.0.0.1", id="leading-zero"),
        pytest.param(LOCAL, "127.0.0.1", ["1.2.3.4" + "0" * 200], "127.0.0.1", id="huge-hop"),
        pytest.param(LOCAL, "127.0.0.1", ["1.2.3.256"], "127.0.0.1", id="octet-out-of-range"),
        pytest.param(
            ("203.0.113.0/24",), "203.0.113.1", ["198.51.100.1"], "198.51.100.1", id="public-cidr"
        ),
        pytest.param(
            ("::ffff:10.0.0.0/104",),
            "10.1.1.1",
            ["203.0.113.9"],
            "203.0.113.9",
            id="mapped-network-trusts-v4",
        ),
    ],
)
def test_x_forwarded_for(
    trusted: tuple[str, ...], peer: str, xff: list[str], expected: str
) -> None:
    headers = [("x-forwarded-for", value) for value in xff]
    assert resolver(*trusted).resolve(scope(peer, headers)).ip == expected


# -- client ip: Forwarded (RFC 7239) --------------------------------------------------------


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        pytest.param(["for=203.0.113.9"], "203.0.113.9", id="plain"),
        pytest.param(['for="203.0.113.9"'], "203.0.113.9", id="quoted"),
        pytest.param(['for="203.0.113.9:4711"'], "203.0.113.9", id="quoted-port"),
        pytest.param(['for="[2001:db8:cafe::17]:4711"'], "2001:db8:cafe::17", id="v6-port"),
        pytest.param(['for="[2001:db8:cafe::17]"'], "2001:db8:cafe::17", id="v6-brackets"),
        pytest.param(["for=[2001:db8:cafe::17]:80"], "2001:db8:cafe::17", id="v6-unquoted"),
        pytest.param(['for="[::ffff:203.0.113.9]"'], "203.0.113.9", id="v6-mapped"),
        pytest.param(["FOR=203.0.113.9"], "203.0.113.9", id="upper-name"),
        pytest.param(["For=203.0.113.9;Proto=https"], "203.0.113.9", id="mixed-case"),
        pytest.param(
            ["proto=https;by=10.0.0.1; for=203.0.113.9 ;host=example.com"],
            "203.0.113.9",
            id="for-not-first",
        ),
        pytest.param(["for=203.0.113.9, for=10.0.0.5"], "203.0.113.9", id="skip-trusted"),
        pytest.param(
            ['for=6.6.6.6, for="203.0.113.9";by=x, For="10.0.0.5:1"'],
            "203.0.113.9",
            id="several-elements",
        ),
        pytest.param(
            ["for=6.6.6.6", "for=203.0.113.9, for=10.0.0.5"],
            "203.0.113.9",
            id="several-lines-joined",
        ),
        pytest.param(["for=10.0.0.1, for=10.0.0.2"], "10.0.0.1", id="all-trusted"),
        pytest.param(["for=unknown"], "127.0.0.1", id="unknown-stops"),
        pytest.param(["for=UNKNOWN, for=10.0.0.5"], "10.0.0.5", id="unknown-after-good-hop"),
        pytest.param(["for=_hidden"], "127.0.0.1", id="obfuscated-stops"),
        pytest.param(['for="_gazonk", for=10.0.0.5'], "10.0.0.5", id="obfuscated-mid-chain"),
        pytest.param(['for="203.0.113.9:_port"'], "203.0.113.9", id="obfuscated-port"),
        pytest.param(["proto=https"], "127.0.0.1", id="element-without-for"),
        pytest.param(["for=203.0.113.9, proto=https"], "127.0.0.1", id="last-hop-without-for"),
        pytest.param(["for=203.0.113.9;for=6.6.6.6"], "127.0.0.1", id="duplicate-for"),
        pytest.param(['for="203.0.113.9'], "127.0.0.1", id="unterminated-quote"),
        pytest.param(['for=""'], "127.0.0.1", id="empty-quoted"),
        pytest.param(["for="], "127.0.0.1", id="empty"),
        pytest.param(['for="a,b;c", for=10.0.0.5'], "10.0.0.5", id="separators-inside-quotes"),
        pytest.param(['for="203.0.113.\\9"'], "203.0.113.9", id="quoted-pair"),
        pytest.param([" , for=203.0.113.9 , "], "203.0.113.9", id="empty-elements"),
        pytest.param(["for=2001:db8::1"], "2001:db8::1", id="bare-v6-tolerated"),
    ],
)
def test_forwarded(forwarded: list[str], expected: str) -> None:
    headers = [("forwarded", value) for value in forwarded]
    assert resolver(*LOCAL, header="forwarded").resolve(scope("127.0.0.1", headers)).ip == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [("x-forwarded-for", "203.0.113.9"), ("forwarded", "198.51.100.20")],
)
def test_only_the_configured_forwarding_header_is_read(header: str, expected: str) -> None:
    # The client sends the header its proxy does not write; the proxy appends to its own.
    # Reading the other one would let the client pick its address.
    spoof = "for=6.6.6.6" if header == "x-forwarded-for" else "6.6.6.6"
    other = "forwarded" if header == "x-forwarded-for" else "x-forwarded-for"
    own = "203.0.113.9" if header == "x-forwarded-for" else "for=198.51.100.20"
    headers = [(other, spoof), (header, own)]
    assert resolver(*LOCAL, header=header).resolve(scope("127.0.0.1", headers)).ip == expected


def test_unknown_forwarding_header_is_refused() -> None:
    with pytest.raises(GuardrailError, match="x-real-ip"):
        resolver(*LOCAL, header="x-real-ip")


def test_forwarded_from_untrusted_peer_ignored() -> None:
    headers = [("forwarded", "for=203.0.113.9")]
    r = resolver(*LOCAL, header="forwarded")
    assert r.resolve(scope("198.51.100.7", headers)).ip == "198.51.100.7"


@pytest.mark.parametrize(
    ("peer", "expected_ip", "expected_subnet"),
    [
        pytest.param(None, "unknown", "unknown", id="no-client"),
        pytest.param("testclient", "testclient", "testclient", id="not-an-address"),
        pytest.param("", "unknown", "unknown", id="empty-host"),
    ],
)
def test_peer_without_address(peer: str | None, expected_ip: str, expected_subnet: str) -> None:
    subject = resolver(*LOCAL).resolve(scope(peer, [("x-forwarded-for", "203.0.113.9")]))
    assert (subject.ip, subject.subnet) == (expected_ip, expected_subnet)


def test_scope_without_headers() -> None:
    subject = resolver(*LOCAL).resolve({"type": "http", "client": ("127.0.0.1", 1)})
    assert subject == Subject(None, None, "127.0.0.1", "127.0.0.0/24")


def test_trust_is_per_resolver() -> None:
    # Parsing is memoised per resolver; another config must not see the first one's verdicts.
    request = scope("10.0.0.1", [("x-forwarded-for", "203.0.113.9")])
    assert resolver("10.0.0.0/8").resolve(request).ip == "203.0.113.9"
    assert resolver().resolve(request).ip == "10.0.0.1"


# -- subnet ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("v4", "v6", "peer", "expected"),
    [
        pytest.param(24, 48, "203.0.113.77", "203.0.113.0/24", id="v4-default"),
        pytest.param(24, 48, "2001:db8:1:2::77", "2001:db8:1::/48", id="v6-default"),
        pytest.param(16, 48, "203.0.113.77", "203.0.0.0/16", id="v4-16"),
        pytest.param(32, 48, "203.0.113.77", "203.0.113.77/32", id="v4-32"),
        pytest.param(0, 48, "203.0.113.77", "0.0.0.0/0", id="v4-0"),
        pytest.param(20, 48, "203.0.113.77", "203.0.112.0/20", id="v4-20"),
        pytest.param(24, 64, "2001:db8:1:2:3::77", "2001:db8:1:2::/64", id="v6-64"),
        pytest.param(24, 56, "2001:db8:1:2ff::1", "2001:db8:1:200::/56", id="v6-56"),
        pytest.param(24, 128, "2001:db8::1", "2001:db8::1/128", id="v6-128"),
        pytest.param(24, 0, "2001:db8::1", "::/0", id="v6-0"),
        pytest.param(24, 48, "::ffff:203.0.113.77", "203.0.113.0/24", id="mapped-uses-v4"),
    ],
)
def test_subnet(v4: int, v6: int, peer: str, expected: str) -> None:
    r = resolver(subnet=Subnet(ipv4_prefix=v4, ipv6_prefix=v6))
    subject = r.resolve(scope(peer))
    assert subject.subnet == expected
    assert r.subnet_of(subject.ip) == expected


def _accepted(text: str) -> str | None:
    try:
        addr = ip_address(text)
    except ValueError:
        return None
    mapped = getattr(addr, "ipv4_mapped", None)
    return str(mapped or addr)


_octet = st.integers(0, 300).map(str) | st.text("0123456789", max_size=4)
_quads = st.lists(_octet, min_size=3, max_size=5).map(".".join)


@given(st.one_of(_quads, st.text("0123456789.a ", max_size=16)))
def test_dotted_quads_parse_as_ipaddress_does(text: str) -> None:
    ip = resolver().resolve(scope(text)).ip
    assert ip == (_accepted(text) or text or "unknown")


@given(st.ip_addresses())
def test_any_address_round_trips(addr: IPv4Address | IPv6Address) -> None:
    r = resolver(subnet=Subnet(ipv4_prefix=20, ipv6_prefix=52))
    subject = r.resolve(scope(str(addr)))
    assert subject.ip == _accepted(str(addr))
    prefix = 20 if ":" not in subject.ip else 52
    assert subject.subnet == str(ip_network(f"{subject.ip}/{prefix}", strict=False))


@pytest.mark.parametrize("text", ["unknown", "testclient", "not an ip"])
def test_subnet_of_non_address_is_itself(text: str) -> None:
    assert resolver().subnet_of(text) == text


@pytest.mark.parametrize(
    "subnet", [Subnet(ipv4_prefix=33), Subnet(ipv4_prefix=-1), Subnet(ipv6_prefix=129)]
)
def test_bad_prefix_refused(subnet: Subnet) -> None:
    with pytest.raises(GuardrailError, match="prefix"):
        resolver(subnet=subnet)


# -- the per-ip identity of an IPv6 client: its network, which it can rotate inside ----------


@pytest.mark.parametrize(
    ("prefix", "peer", "ip_key"),
    [
        pytest.param(64, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64", id="v6-64"),
        pytest.param(56, "2001:db8:1:2ff::1", "2001:db8:1:200::/56", id="v6-56"),
        pytest.param(0, "2001:db8::1", "::/0", id="v6-0"),
        pytest.param(128, "2001:db8::1", None, id="v6-128-is-the-address"),
        pytest.param(64, "203.0.113.77", None, id="v4-is-the-address"),
        pytest.param(64, "::ffff:203.0.113.77", None, id="mapped-is-v4"),
    ],
)
def test_ip_key(prefix: int, peer: str, ip_key: str | None) -> None:
    r = IdentityResolver(Identity(client_ip=ClientIp(ipv6_prefix=prefix)), SECRET)
    subject = r.resolve(scope(peer))
    assert subject.ip_key == ip_key
    assert subject.ip == str(ip_address(peer.removeprefix("::ffff:")))  # the address itself


def test_ip_key_of_a_forwarded_client() -> None:
    r = resolver("127.0.0.1")
    subject = r.resolve(scope("127.0.0.1", [("x-forwarded-for", "2001:db8:1:2::9")]))
    assert (subject.ip, subject.ip_key) == ("2001:db8:1:2::9", "2001:db8:1:2::/64")


@pytest.mark.parametrize("prefix", [-1, 129])
def test_bad_ip_key_prefix_refused(prefix: int) -> None:
    with pytest.raises(GuardrailError, match=r"client_ip\.ipv6_prefix"):
        IdentityResolver(Identity(client_ip=ClientIp(ipv6_prefix=prefix)), SECRET)


# -- a server that applied X-Forwarded-For before guardrail (uvicorn's proxy_headers) --------


def rewritten(host: str, port: int, xff: str) -> Scope:
    """The scope uvicorn's ProxyHeadersMiddleware hands on: ``client`` taken from the header."""
    request = scope(host, [("x-forwarded-for", xff)])
    request["client"] = (host, port)
    return request


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "X-Forwarded-For" in r.getMessage()]


@pytest.mark.parametrize(
    ("host", "port", "xff"),
    [
        pytest.param("198.51.100.1", 0, "198.51.100.1", id="one-hop"),
        pytest.param("198.51.100.1", 0, "6.6.6.6, 198.51.100.1", id="rightmost"),
        pytest.param("198.51.100.1", 8080, "198.51.100.1:8080", id="with-port"),
        pytest.param("2001:db8::1", 0, "2001:db8::1", id="v6"),
    ],
)
def test_a_rewritten_client_is_reported_once(
    caplog: pytest.LogCaptureFixture, host: str, port: int, xff: str
) -> None:
    r = resolver()
    with caplog.at_level(logging.WARNING, logger="guardrail"):
        subjects = [r.resolve(rewritten(host, port, xff)) for _ in range(3)]
    assert [s.ip for s in subjects] == [host] * 3  # guardrail cannot know better
    (message,) = warnings_of(caplog)
    assert "proxy_headers" in message and "--forwarded-allow-ips" in message


@pytest.mark.parametrize(
    ("trusted", "host", "port", "xff"),
    [
        pytest.param((), "198.51.100.1", 40000, "198.51.100.1", id="a-real-source-port"),
        pytest.param((), "198.51.100.1", 0, "198.51.100.2", id="not-a-hop"),
        pytest.param((), "198.51.100.1", 8080, "198.51.100.1:8081", id="other-port"),
        # the server trusts what guardrail trusts: it concluded what guardrail would have
        pytest.param(LOCAL, "198.51.100.1", 0, "6.6.6.6, 198.51.100.1", id="same-proxies"),
        pytest.param(LOCAL, "198.51.100.1", 0, "198.51.100.1, 10.0.0.5", id="trusted-hops"),
    ],
)
def test_a_client_the_server_did_not_misplace_is_not_reported(
    caplog: pytest.LogCaptureFixture, trusted: tuple[str, ...], host: str, port: int, xff: str
) -> None:
    r = resolver(*trusted)
    with caplog.at_level(logging.WARNING, logger="guardrail"):
        r.resolve(rewritten(host, port, xff))
    assert warnings_of(caplog) == []


def test_a_rewrite_past_an_untrusted_hop_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    # The server trusts 6.6.6.6 and guardrail does not: the client chose its address.
    r = resolver(*LOCAL)
    with caplog.at_level(logging.WARNING, logger="guardrail"):
        r.resolve(rewritten("198.51.100.1", 0, "198.51.100.1, 6.6.6.6"))
    assert len(warnings_of(caplog)) == 1


def test_a_rewrite_is_reported_when_guardrail_reads_forwarded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The proxies write Forwarded and pass X-Forwarded-For through: the server read the client's.
    r = resolver(*LOCAL, header="forwarded")
    with caplog.at_level(logging.WARNING, logger="guardrail"):
        r.resolve(rewritten("198.51.100.1", 0, "198.51.100.1"))
    assert len(warnings_of(caplog)) == 1


# -- api key --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "headers", "raw"),
    [
        pytest.param("authorization", [("authorization", "Bearer sk-123")], "sk-123", id="bearer"),
        pytest.param("authorization", [("authorization", "bearer sk-123")], "sk-123", id="lower"),
        pytest.param("authorization", [("authorization", "BEARER sk-123")], "sk-123", id="upper"),
        pytest.param("authorization", [("authorization", "Bearer   sk-1 ")], "sk-1", id="spaces"),
        pytest.param("authorization", [("authorization", "Bearer\tsk-1")], "sk-1", id="tab"),
        pytest.param("authorization", [("authorization", "sk-123")], "sk-123", id="no-scheme"),
        pytest.param(
            "authorization", [("authorization", "Bearersk-1")], "Bearersk-1", id="not-a-scheme"
        ),
        pytest.param("authorization", [("authorization", "")], None, id="empty"),
        pytest.param("authorization", [("authorization", "Bearer ")], None, id="bearer-only"),
        pytest.param("authorization", [("authorization", "Bearer")], None, id="bearer-word"),
        pytest.param("authorization", [], None, id="missing"),
        pytest.param("x-api-key", [("x-api-key", "sk-123")], "sk-123", id="raw-header"),
        pytest.param("X-Api-Key", [("x-api-key", "sk-123")], "sk-123", id="config-case"),
        pytest.param("x-api-key", [("authorization", "Bearer sk-1")], None, id="other-header"),
        pytest.param(
            "authorization",
            [("authorization", "Bearer first"), ("authorization", "Bearer second")],
            "first",
            id="first-wins",
        ),
    ],
)
def test_api_key(header: str, headers: list[tuple[str, str]], raw: str | None) -> None:
    subject = resolver(api_key=ApiKey(header=header)).resolve(scope(headers=headers))
    assert subject.api_key == (None if raw is None else hash_key(SECRET, raw))


def test_api_key_disabled() -> None:
    subject = resolver(api_key=None).resolve(scope(headers=[("authorization", "Bearer sk")]))
    assert subject.api_key is None


def test_api_key_never_raw() -> None:
    raw = "sk-live-abcdef0123456789"
    subject = resolver().resolve(scope(headers=[("authorization", f"Bearer {raw}")]))
    assert raw not in repr(subject)
    assert raw not in str(subject.as_dict())


# -- account --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([("x-account-id", "acct-42")], "acct-42", id="present"),
        pytest.param([("x-account-id", "  acct-42 ")], "acct-42", id="stripped"),
        pytest.param([("x-account-id", "")], None, id="empty"),
        pytest.param([], None, id="missing"),
        # a proxy that adds its header after the client's leaves two: neither is believed
        pytest.param([("x-account-id", "a"), ("x-account-id", "b")], None, id="two-values"),
    ],
)
def test_account_header(headers: list[tuple[str, str]], expected: str | None) -> None:
    r = resolver("127.0.0.1", account=Account(header="X-Account-Id"))
    assert r.resolve(scope("127.0.0.1", headers)).account == expected


@pytest.mark.parametrize("trusted", [(), ("10.0.0.0/8",)], ids=["no-proxy", "other-proxy"])
def test_account_header_from_an_untrusted_peer_is_not_read(trusted: tuple[str, ...]) -> None:
    # It names the principal: from anyone, a limited key would come back under a new account
    # and an allow-listed account would be anyone's to claim.
    r = resolver(*trusted, account=Account(header="x-account-id"))
    subject = r.resolve(scope("203.0.113.7", [("x-account-id", "partner")]))
    assert subject.account is None


def test_account_header_may_be_the_api_key_header() -> None:
    r = resolver("127.0.0.1", api_key=ApiKey("x-tenant"), account=Account(header="x-tenant"))
    subject = r.resolve(scope("127.0.0.1", [("x-tenant", "t1")]))
    assert (subject.api_key, subject.account) == (hash_key(SECRET, "t1"), "t1")
    direct = r.resolve(scope("203.0.113.7", [("x-tenant", "t1")]))
    assert (direct.api_key, direct.account) == (hash_key(SECRET, "t1"), None)


@pytest.mark.parametrize(
    ("length", "hashed"),
    [(1, False), (MAX_ACCOUNT, False), (MAX_ACCOUNT + 1, True), (65_000, True)],
)
def test_long_account_header_is_its_keyed_hash(length: int, hashed: bool) -> None:
    r = resolver("127.0.0.1", account=Account(header="x-account-id"))
    raw = "a" * length
    account = r.resolve(scope("127.0.0.1", [("x-account-id", f" {raw} ")])).account
    assert account == (hash_key(SECRET, raw) if hashed else raw)


@pytest.mark.parametrize("length", [MAX_ACCOUNT, MAX_ACCOUNT + 1, 100_000])
def test_long_account_from_a_callable_is_its_keyed_hash(length: int) -> None:
    raw = "é" * length
    r = resolver(account=Account(resolve=lambda s: raw))
    account = r.resolve(scope()).account
    assert account == (raw if length <= MAX_ACCOUNT else hash_key(SECRET, raw))


def test_long_accounts_do_not_collide() -> None:
    r = resolver(account=Account(resolve=lambda s: s["path"]))
    long = ["/" + "a" * MAX_ACCOUNT, "/" + "a" * MAX_ACCOUNT + "b"]
    accounts = {r.resolve({**scope(), "path": p}).account for p in long}
    assert len(accounts) == 2


def test_account_callable_gets_the_scope() -> None:
    seen: list[Scope] = []

    def account_of(s: Scope) -> str | None:
        seen.append(s)
        return str(s["path"]).rsplit("/", 1)[-1] or None

    r = resolver(account=Account(resolve=account_of))
    request = scope(headers=[("x-account-id", "ignored")])
    request["path"] = "/accounts/acct-7"
    assert r.resolve(request).account == "acct-7"
    assert seen == [request]
    assert r.resolve(scope()).account is None


@pytest.mark.parametrize(
    ("result", "expected"),
    [("acct-1", "acct-1"), ("", None), (None, None)],
)
def test_account_callable_results(result: str | None, expected: str | None) -> None:
    r = resolver(account=Account(resolve=lambda s: result))
    assert r.resolve(scope()).account == expected


def test_account_callable_that_raises(caplog: pytest.LogCaptureFixture) -> None:
    def account_of(s: Scope) -> str | None:
        raise RuntimeError("app bug")

    r = resolver(account=Account(resolve=account_of))
    with caplog.at_level(logging.WARNING, logger="guardrail.identity"):
        first = r.resolve(scope(headers=[("authorization", "Bearer sk")]))
        second = r.resolve(scope())
    assert first == Subject(hash_key(SECRET, "sk"), None, "198.51.100.7", "198.51.100.0/24")
    assert second.account is None
    warnings = [rec for rec in caplog.records if rec.name == "guardrail.identity"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert warnings[0].exc_info is not None


def test_account_callable_wrong_type(caplog: pytest.LogCaptureFixture) -> None:
    r = resolver(account=Account(resolve=lambda s: 42))  # type: ignore[arg-type,return-value]
    with caplog.at_level(logging.WARNING, logger="guardrail.identity"):
        assert r.resolve(scope()).account is None
        assert r.resolve(scope()).account is None
    assert [rec.levelno for rec in caplog.records] == [logging.WARNING]


def test_account_without_header_or_callable() -> None:
    r = resolver(account=Account())
    assert r.resolve(scope(headers=[("x-account-id", "a")])).account is None


# -- headers that are not UTF-8 -------------------------------------------------------------


@pytest.mark.parametrize("proxy_header", ["x-forwarded-for", "forwarded"])
@pytest.mark.parametrize(
    "value",
    [
        b"\xff\xfe\x00",
        b"\xc3\x28",
        "é".encode("latin-1"),
        b"\x80" * 300,
        "\u0661.\u0662.\u0663.\u0664".encode(),
    ],
)
def test_headers_that_are_not_utf8_do_not_raise(value: bytes, proxy_header: str) -> None:
    r = resolver(*LOCAL, header=proxy_header, account=Account(header="x-account-id"))
    hops = (
        value + b", 10.0.0.5"
        if proxy_header == "x-forwarded-for"
        else (b'for="' + value + b'", for=10.0.0.5')
    )
    headers: list[tuple[str, bytes]] = [
        ("authorization", b"Bearer " + value),
        ("x-account-id", value),
        (proxy_header, hops),
    ]
    subject = r.resolve(scope("127.0.0.1", headers))
    assert subject.ip == "10.0.0.5"
    assert subject.api_key == "k:" + hmac.new(SECRET, value, hashlib.sha256).hexdigest()[:32]
    assert subject.account == (
        value.decode("latin-1") if len(value) <= MAX_ACCOUNT else subject.api_key
    )


def test_utf8_key_hashes_like_hash_key() -> None:
    raw = "clé-ключ"
    subject = resolver().resolve(scope(headers=[("authorization", b"Bearer " + raw.encode())]))
    assert subject.api_key == hash_key(SECRET, raw)


def test_keys_seen_again_hash_the_same_and_the_hashes_kept_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(identity, "KEYS_KEPT", 3)
    r = resolver()
    for raw in ["sk-a", "sk-b", "sk-c", "sk-a", "sk-d", "sk-e", "sk-a", "sk-a2", "sk-"]:
        subject = r.resolve(scope(headers=[("authorization", f"Bearer {raw}")]))
        assert subject.api_key == hash_key(SECRET, raw)
    assert 1 <= len(r._hash._known) <= 3  # emptied when full
    long = "sk-" + "x" * identity.KEPT_KEY_BYTES
    subject = r.resolve(scope(headers=[("authorization", f"Bearer {long}")]))
    assert subject.api_key == hash_key(SECRET, long)
    assert long.encode() not in r._hash._known  # hashed each time, never held


# -- hash_key and Subject -------------------------------------------------------------------


def test_hash_key_shape_and_value() -> None:
    digest = hash_key(b"s3cret", "sk-abc")
    assert digest == "k:" + hmac.new(b"s3cret", b"sk-abc", hashlib.sha256).hexdigest()[:32]
    assert len(digest) == 34
    assert all(c in "0123456789abcdef" for c in digest[2:])


@pytest.mark.parametrize("raw", ["sk-abc", "", "k:" + "0" * 32, "ключ"])
def test_hash_key_deterministic_and_raw_absent(raw: str) -> None:
    assert hash_key(SECRET, raw) == hash_key(SECRET, raw)
    assert raw == "" or raw not in hash_key(SECRET, raw)


def test_hash_key_depends_on_secret_and_key() -> None:
    assert hash_key(b"one", "sk-abc") != hash_key(b"two", "sk-abc")
    assert hash_key(b"one", "sk-abc") != hash_key(b"one", "sk-abd")


@pytest.mark.parametrize(
    "secret", [b"", b"s", b"x" * 63, b"x" * 64, b"x" * 65, bytes(range(256)) * 2]
)
@pytest.mark.parametrize("raw", ["sk-abc", "ключ", "k" * 1000])
def test_resolver_hash_is_hash_key_for_any_secret_length(secret: bytes, raw: str) -> None:
    request = scope(headers=[("authorization", b"Bearer " + raw.encode())])
    assert resolver(secret=secret).resolve(request).api_key == hash_key(secret, raw)


def test_resolver_uses_its_secret() -> None:
    request = scope(headers=[("authorization", "Bearer sk")])
    assert resolver(secret=b"a").resolve(request).api_key == hash_key(b"a", "sk")
    assert resolver(secret=b"b").resolve(request).api_key == hash_key(b"b", "sk")


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        pytest.param(
            Subject("k:" + "a" * 32, "acct-42", "203.0.113.7", "203.0.113.0/24"),
            {
                "api_key": "k:" + "a" * 32,
                "account": "acct-42",
                "ip": "203.0.113.7",
                "subnet": "203.0.113.0/24",
            },
            id="full",
        ),
        pytest.param(
            Subject(None, None, "unknown", "unknown"),
            {"ip": "unknown", "subnet": "unknown"},
            id="anonymous",
        ),
        pytest.param(
            Subject(None, "acct-1", "2001:db8::1", "2001:db8::/48"),
            {"account": "acct-1", "ip": "2001:db8::1", "subnet": "2001:db8::/48"},
            id="account-only",
        ),
    ],
)
def test_subject_as_dict(subject: Subject, expected: dict[str, str]) -> None:
    assert subject.as_dict() == expected
    assert list(subject.as_dict()) == list(expected)  # SPEC §4 key order


def test_full_request() -> None:
    r = resolver("10.0.0.0/8", account=Account(header="x-account-id"))
    request = scope(
        "10.0.0.2",
        [
            ("host", "api.example.com"),
            ("authorization", "Bearer sk-live-1"),
            ("x-account-id", "acct-42"),
            ("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.0.0.9"),
        ],
    )
    assert r.resolve(request) == Subject(
        hash_key(SECRET, "sk-live-1"), "acct-42", "203.0.113.7", "203.0.113.0/24"
    )


def test_policy_identity_block() -> None:
    policy = Policy.from_string(
        """
version: 1
identity:
  api_key: {header: X-Api-Key}
  account: {header: x-account-id}
  client_ip: {trusted_proxies: [127.0.0.1, 10.0.0.0/8, "2001:db8:ffff::/48"], header: forwarded}
  subnet: {ipv4_prefix: 16, ipv6_prefix: 32}
"""
    )
    r = IdentityResolver(policy.identity, SECRET)
    request = scope(
        "2001:db8:ffff::2",
        [
            ("x-api-key", "sk-1"),
            ("x-account-id", "acct-9"),
            ("forwarded", 'for="[2001:db8:aa:bb::1]:443", for=10.0.0.3, for=127.0.0.1'),
        ],
    )
    assert r.resolve(request) == Subject(
        hash_key(SECRET, "sk-1"),
        "acct-9",
        "2001:db8:aa:bb::1",
        "2001:db8::/32",
        "2001:db8:aa:bb::/64",
    )
    anonymous = IdentityResolver(Policy.from_string("version: 1").identity, SECRET)
    assert anonymous.resolve(scope("203.0.113.7", [("x-forwarded-for", "6.6.6.6")])) == Subject(
        None, None, "203.0.113.7", "203.0.113.0/24"
    )


def test_a_client_address_that_is_no_address_is_one_bounded_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server that put a client-written X-Forwarded-For in scope["client"], or a unix socket:
    the value names one client, a long one only as its keyed hash, and it is said once."""
    resolver = IdentityResolver(Identity(), SECRET)
    huge = "x" * 16_000
    with caplog.at_level("WARNING", logger="guardrail"):
        first = resolver.resolve({"type": "http", "headers": [], "client": (huge, 0)})
        again = resolver.resolve({"type": "http", "headers": [], "client": (huge, 0)})
        other = resolver.resolve({"type": "http", "headers": [], "client": (huge + "y", 0)})
        short = resolver.resolve({"type": "http", "headers": [], "client": ("testclient", 0)})
    assert first.ip == first.subnet == again.ip and first.ip.startswith("h:")
    assert len(first.ip) == 34 and other.ip != first.ip
    assert short.ip == short.subnet == "testclient"
    warned = [r for r in caplog.records if "not an IP address" in r.getMessage()]
    assert len(warned) == 1 and huge not in warned[0].getMessage()
