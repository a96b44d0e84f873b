"""The paths of a request under a prefix: the one the app routes on, and the one the client sent.

A server started with ``--root-path /llm`` (uvicorn since 0.26), Starlette's ``Mount`` and
FastAPI's ``app.mount`` hand the app ``path`` with the prefix in it and the prefix in
``root_path``; Hypercorn, Daphne and older uvicorn set ``root_path`` and leave ``path`` as the
proxy forwarded it, without the prefix. Routes and the challenge prefix match what the app
routes on, which is Starlette's ``get_route_path`` (kept to the letter, so that guardrail and the
app it guards never disagree); URLs handed to a client and audit records carry the prefix.
"""

from __future__ import annotations

from starlette.types import Scope


def route_path(scope: Scope) -> str:
    """The path the app routes on: ``path`` without ``root_path`` when ``path`` starts with it
    at a segment boundary, else ``path`` unchanged (a server that never put it there)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if len(path) == len(root):
        return ""
    if path[len(root)] == "/":
        return path[len(root) :]
    return path


def irregular(path: str, scope: Scope) -> bool:
    """Whether frameworks may route ``path`` somewhere Starlette's rule does not: it has a run
    of ``/``, a trailing ``/``, or a ``root_path`` (``Guardrail._http`` has it inline: it is
    asked of every request)."""
    return "//" in path or (path[-1:] == "/" and len(path) > 1) or bool(scope.get("root_path"))


def canonical(scope: Scope) -> str:
    """The path as the frameworks that normalise it route on it. Litestar removes ``root_path``
    wherever it first occurs in ``path``, Quart and Django remove it at the start without a
    segment boundary; Litestar collapses runs of ``/`` and drops a trailing one, Werkzeug drops
    leading ones. Daphne takes ``root_path`` from the client's ``Daphne-Root-Path`` header, so a
    client may pick it. The route this path names decides when it is not exempt (``_http``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and root in path:
        path = path.split(root, 1)[1]
    return "/" + "/".join(part for part in path.split("/") if part)


def public_path(scope: Scope) -> str:
    """The path as the client sent it: ``root_path`` and the path the app routes on."""
    root: str = scope.get("root_path", "")
    return root + route_path(scope) if root else route_path(scope)


def root_of(scope: Scope) -> str:
    """The prefix a URL handed to the client starts with ("" when served at the root)."""
    return scope.get("root_path", "")  # type: ignore[no-any-return]


def home(scope: Scope) -> str:
    """The app's root as a URL to send a client to: ``root_path`` and ``/``, or ``/`` when
    ``root_path`` would lead off the site or break a header (Daphne takes it from the client's
    own ``Daphne-Root-Path`` header: ``//evil.example`` would be another host)."""
    root: str = scope.get("root_path", "")
    if not root:
        return "/"
    url = root.rstrip("/") + "/"
    if (
        url.startswith("//")
        or "\\" in url
        or any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in url)
        or not url.isascii()
    ):
        return "/"
    return url
