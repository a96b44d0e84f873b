"""Storage URIs: parsing, and masking the password before a URI is shown anywhere."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from guardrail.errors import StorageError

SCHEMES = ("redis", "rediss", "redis+cluster", "redis+sentinel")
DEFAULT_TIMEOUT = 0.25
DEFAULT_PREFIX = "gr:"
DEFAULT_MAX_CONNECTIONS = 100


def mask_uri(uri: str) -> str:
    """The URI with any password replaced by ``***``, fit for messages and logs."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    netloc, tail = _split_netloc(rest)
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hosts}" if colon else f"***@{hosts}"
    tail = _QUERY_PASSWORD.sub(r"\1***", tail)
    return f"{scheme}://{netloc}{tail}"


_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*")


def _split_netloc(rest: str) -> tuple[str, str]:
    """What follows ``scheme://``, split into the ``user@host…`` part and the rest."""
    for index, char in enumerate(rest):
        if char in "/?":
            return rest[:index], rest[index:]
    return rest, ""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed storage URI."""

    scheme: str
    url: str  # for redis/rediss: the URI without our own query parameters
    hosts: tuple[tuple[str, int], ...]  # cluster / sentinel nodes
    service: str  # sentinel service name
    username: str | None
    password: str | None
    timeout: float
    prefix: str
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # charges in flight at once


def parse_uri(uri: str) -> RedisTarget:
    """Split a redis storage URI; raises StorageError naming the (masked) URI."""
    shown = mask_uri(uri)
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise StorageError(f"storage {shown!r}: scheme must be one of {', '.join(SCHEMES)}")
    netloc, tail = _split_netloc(rest)
    path, _, query = tail.partition("?")
    timeout, prefix, limit, others = DEFAULT_TIMEOUT, DEFAULT_PREFIX, DEFAULT_MAX_CONNECTIONS, []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "timeout":
            timeout = _number(float, value)
            if not timeout > 0:
                raise StorageError(f"storage {shown!r}: timeout must be a positive number")
        elif key == "max_connections":
            limit = int(_number(int, value))
            if limit < 1:
                raise StorageError(f"storage {shown!r}: max_connections must be at least 1")
        elif key == "prefix":
            prefix = value
        else:
            others.append((key, value))
    if scheme in ("redis", "rediss"):
        url = f"{scheme}://{netloc}{path}" + (f"?{urlencode(others)}" if others else "")
        return RedisTarget(scheme, url, (), "", None, None, timeout, prefix, limit)
    if others:
        names = ", ".join(sorted({key for key, _ in others}))
        raise StorageError(f"storage {shown!r}: unknown parameter(s) {names}")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, secret = userinfo.partition(":")
        if colon:
            username, password = unquote(user) or None, unquote(secret) or None
        else:
            password = unquote(user) or None
    hosts = tuple(_host_port(item, shown) for item in netloc.split(","))
    service = path.strip("/")
    if scheme == "redis+sentinel" and not service:
        raise StorageError(f"storage {shown!r}: name the sentinel service, e.g. /mymaster")
    if scheme == "redis+cluster" and service not in ("", "0"):
        raise StorageError(f"storage {shown!r}: a cluster has only database 0")
    return RedisTarget(scheme, "", hosts, service, username, password, timeout, prefix, limit)


def _number(kind: type[float] | type[int], value: str) -> float:
    try:
        return kind(value)
    except ValueError:
        return -1


def _host_port(item: str, shown: str) -> tuple[str, int]:
    try:
        parts = urlsplit(f"//{item}")
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise StorageError(f"storage {shown!r}: {item!r} is not host:port")
    return parts.hostname, port
