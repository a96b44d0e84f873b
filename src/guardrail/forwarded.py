"""Forwarding headers: the hops a request passed through, as the proxies wrote them.

``X-Forwarded-For`` is a comma list of addresses; ``Forwarded`` (RFC 7239) is a list of
elements whose ``for=`` parameter names the hop, quoted, bracketed (IPv6) and with a port where
the proxy chose to. A hop that cannot be read comes back as None: the caller stops trusting the
chain there. Which header is read, and which hops are trusted, is identity's business.
"""

from __future__ import annotations

from collections.abc import Iterable


def host_of(node: str) -> str | None:
    """The address part of ``1.2.3.4``, ``1.2.3.4:80``, ``[2001:db8::1]:80`` or ``2001:db8::1``."""
    if node.startswith("["):
        end = node.find("]")
        if end == -1:
            return None
        rest = node[end + 1 :]
        if rest and not (rest[0] == ":" and _is_port(rest[1:])):
            return None
        return node[1:end]
    if node.count(":") == 1:
        host, _, port = node.partition(":")
        return host if _is_port(port) else None
    return node


def _is_port(text: str) -> bool:
    # RFC 7239 also allows an obfuscated port ("_abc"); it carries no meaning here.
    if text.startswith("_"):
        return len(text) > 1
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit()


def xff_nodes(values: list[bytes]) -> list[str | None]:
    text = (values[0] if len(values) == 1 else b",".join(values)).decode("latin-1")
    # RFC 9110 §5.6.1: empty list elements are not elements.
    return [node for part in text.split(",") if (node := part.strip())]


def forwarded_nodes(values: list[bytes]) -> list[str | None] | None:
    """One entry per RFC 7239 element: its ``for=`` node, or None when absent or malformed."""
    text = (values[0] if len(values) == 1 else b",".join(values)).decode("latin-1")
    nodes: list[str | None] = []
    for element in _split_unquoted(text, ","):
        if element.strip():
            nodes.append(_forwarded_for(element))
    return nodes or None


def _forwarded_for(element: str) -> str | None:
    node: str | None = None
    for pair in _split_unquoted(element, ";"):
        name, eq, value = pair.partition("=")
        if not eq or name.strip().lower() != "for":
            continue
        if node is not None:
            return None  # two for= in one element: which hop is it?
        value = value.strip()
        if value.startswith('"'):
            if len(value) < 2 or not value.endswith('"'):
                return None
            value = _unescape(value[1:-1])
        node = value
    return node


def _split_unquoted(text: str, sep: str) -> Iterable[str]:
    if '"' not in text:
        return text.split(sep)
    parts: list[str] = []
    start, quoted, escaped = 0, False, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == sep:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    chars = iter(text)
    for ch in chars:
        out.append(next(chars, "") if ch == "\\" else ch)
    return "".join(out)


def last_element(values: list[bytes]) -> dict[str, str]:
    """The parameters of the last RFC 7239 element (the one the nearest proxy wrote), names
    lowercased and values unquoted; a parameter given twice is dropped (which one is meant?)."""
    text = (values[0] if len(values) == 1 else b",".join(values)).decode("latin-1")
    elements = [e for e in _split_unquoted(text, ",") if e.strip()]
    if not elements:
        return {}
    params: dict[str, str] = {}
    seen: set[str] = set()
    for pair in _split_unquoted(elements[-1], ";"):
        name, eq, value = pair.partition("=")
        name = name.strip().lower()
        if not eq or not name:
            continue
        value = value.strip()
        if value.startswith('"'):
            if len(value) < 2 or not value.endswith('"'):
                continue
            value = _unescape(value[1:-1])
        if name in seen:
            params.pop(name, None)
            continue
        seen.add(name)
        params[name] = value
    return params
