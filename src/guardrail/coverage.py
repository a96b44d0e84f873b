"""Which of an app's routes the policy guards (``guardrail routes POLICY --app module:app``).

The app is imported and its routes read where the framework keeps them: Starlette and FastAPI
(``app.routes``, into ``Mount`` and ``Host`` recursively), Litestar (``app.routes``), Quart and
Flask (``app.url_map``). Each route is tried against the policy as guardrail tries a request:
its path template made concrete (a parameter becomes its own name, or ``1`` for a number) and
matched, method by method, on the path the policy sees. Under a ``Mount`` whose app is (or
wraps) a ``Guardrail``, that is the path below the mount, as the request's ``root_path`` makes
it; routes outside every ``Guardrail`` of an app that has one are unguarded whatever the policy.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from starlette.routing import Host, Mount

from guardrail.errors import GuardrailError
from guardrail.limits import RouteTable
from guardrail.policy import Policy


class CoverageError(GuardrailError):
    """The app cannot be imported or its routes cannot be read."""


@dataclass(frozen=True, slots=True)
class AppRoute:
    path: str  # the template as the app declares it, mounts included (/engines/{m}/chat)
    routed: str  # a concrete path it accepts, as the policy sees it (below a guarding mount)
    methods: tuple[str, ...]
    guarded: bool  # under a Guardrail (or the app has none and is assumed wrapped whole)


@dataclass(frozen=True, slots=True)
class Row:
    method: str
    path: str
    route: str | None  # the policy route that decides it
    how: str  # matched, exempt, unmatched (the default route), refused, unguarded, outside


@dataclass(frozen=True, slots=True)
class Coverage:
    framework: str
    rows: tuple[Row, ...]
    unused: tuple[tuple[int, str, str], ...]  # policy routes no app route reaches

    @property
    def unguarded_posts(self) -> list[Row]:
        return [r for r in self.rows if r.method == "POST" and r.how in ("unguarded", "outside")]


# Methods a route answers that are never worth a row of their own: HEAD follows GET, and
# OPTIONS is CORS's (Starlette adds the first, Litestar and Quart the second).
_IMPLIED = frozenset(("HEAD", "OPTIONS"))
_ANY = ("GET", "POST")  # a route that takes any method (a mounted app): what it is asked most


def load_app(ref: str) -> Any:
    """The object a ``module:attribute`` reference names, imported as uvicorn would (the
    current directory first on the path)."""
    module_name, sep, attribute = ref.partition(":")
    if not sep or not module_name or not attribute:
        raise CoverageError(f"--app {ref!r}: expected module:attribute, such as myapp.main:app")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        target: Any = importlib.import_module(module_name)
        for name in attribute.split("."):
            target = getattr(target, name)
    except Exception as exc:  # the user's module may fail in any way while importing
        raise CoverageError(f"--app {ref}: cannot import it ({type(exc).__name__}: {exc})") from exc
    return target


def app_routes(app: Any) -> tuple[str, list[AppRoute]]:
    """The app's framework and its routes; CoverageError for a framework it cannot read."""
    from guardrail.middleware import Guardrail

    inner, guarded = _unwrap(app, Guardrail)
    framework = _framework(inner)
    found = list(_walk(inner, "", "", guarded, Guardrail))
    if not guarded and not any(r.guarded for r in found):
        # No Guardrail in sight (it is added when the app is served): assume it wraps it all.
        found = [AppRoute(r.path, r.routed, r.methods, True) for r in found]
    return framework, found


def coverage(policy: Policy, app: Any) -> Coverage:
    framework, routes = app_routes(app)
    table = RouteTable(policy.routes, policy.unmatched)
    rows: list[Row] = []
    reached: set[str] = set()
    for app_route in routes:
        methods = _ANY if app_route.methods == ("*",) else app_route.methods
        methods = tuple(m for m in methods if m not in _IMPLIED) or methods
        for method in methods:
            asked = "GET" if method == "WEBSOCKET" else method  # a handshake is a GET
            route = table.match(app_route.routed, asked)
            if not app_route.guarded:
                rows.append(Row(method, app_route.path, None, "outside"))
            elif route is not None:
                reached.add(route.name)
                rows.append(Row(method, app_route.path, route.name, _how(route.exempt)))
            elif table.default is not None:
                rows.append(Row(method, app_route.path, table.default.name, "unmatched"))
            elif table.refuse:
                rows.append(Row(method, app_route.path, None, "refused"))
            else:
                rows.append(Row(method, app_route.path, None, "unguarded"))
    unused = tuple(
        (index, route.name, route.match.path.pattern)
        for index, route in enumerate(policy.routes)
        if route.name not in reached
    )
    return Coverage(framework, tuple(rows), unused)


def _how(exempt: bool) -> str:
    return "exempt" if exempt else "matched"


def _unwrap(app: Any, guardrail: type) -> tuple[Any, bool]:
    """The app below its middleware, and whether a Guardrail is among them."""
    guarded = False
    for _ in range(64):  # a chain of middleware, never a cycle
        if isinstance(app, guardrail):
            guarded = True
        elif any(getattr(m, "cls", None) is guardrail for m in getattr(app, "user_middleware", ())):
            guarded = True  # app.add_middleware(Guardrail, ...): built at the first request
        if _readable(app):
            return app, guarded
        inner = getattr(app, "app", None)
        if inner is None or inner is app:
            return app, guarded
        app = inner
    return app, guarded


def _readable(app: Any) -> bool:
    return isinstance(getattr(app, "routes", None), list) or hasattr(app, "url_map")


def _framework(app: Any) -> str:
    module = type(app).__module__.split(".")[0]
    if module in ("starlette", "fastapi", "litestar", "quart", "flask"):
        return module
    if _readable(app):
        return f"{module} (read as Starlette)"
    if inspect.isfunction(app) and not inspect.iscoroutinefunction(app):
        raise CoverageError(
            f"{app.__qualname__} is a function: an app factory? Name the app it returns "
            "(app = create_app() in a module)"
        )
    raise CoverageError(
        f"cannot read the routes of a {type(app).__module__}.{type(app).__qualname__}: "
        "guardrail routes reads Starlette, FastAPI, Litestar, Quart and Flask apps (for "
        "Django, list the paths of urls.py against the policy by hand)"
    )


def _walk(app: Any, prefix: str, below: str, guarded: bool, guardrail: type) -> Iterator[AppRoute]:
    """``prefix``: the mounts above ``app``; ``below``: the mounts below the innermost
    Guardrail, which the policy sees (the rest is its ``root_path``)."""
    if hasattr(app, "url_map"):  # Quart, Flask (Werkzeug rules)
        for rule in app.url_map.iter_rules():
            template = str(rule.rule)
            methods = tuple(sorted(rule.methods or ()))
            yield AppRoute(prefix + template, below + _sample(template), methods, guarded)
        return
    litestar = type(app).__module__.startswith("litestar")
    for route in getattr(app, "routes", None) or ():
        path = str(getattr(route, "path", ""))
        if litestar:
            yield from _litestar_route(route, prefix, below, guarded)
        elif hasattr(route, "effective_candidates"):  # FastAPI's include_router(router, prefix)
            yield from _included(route, prefix, below, guarded)
        elif isinstance(route, Mount):
            # a Mount: the app below it sees this path in its root_path
            inner, guarding = _unwrap(route.app, guardrail)
            here = "" if guarding else below + path
            if _readable(inner):
                yield from _walk(inner, prefix + path, here, guarded or guarding, guardrail)
            else:  # an app of its own (static files, another framework): any path below
                yield AppRoute(
                    prefix + path + "/{path:path}", here + "/x", ("*",), guarded or guarding
                )
        elif isinstance(route, Host):  # the same paths, another host name
            inner, guarding = _unwrap(route.app, guardrail)
            yield from _walk(
                inner, prefix, "" if guarding else below, guarded or guarding, guardrail
            )
        else:
            declared = getattr(route, "methods", None)
            if type(route).__name__.endswith("WebSocketRoute"):
                names: tuple[str, ...] = ("WEBSOCKET",)
            elif declared:
                names = tuple(sorted(declared))
            else:
                names = ("*",)
            yield AppRoute(prefix + path, below + _sample(path), names, guarded)


def _included(router: Any, prefix: str, below: str, guarded: bool) -> Iterator[AppRoute]:
    """An ``APIRouter`` FastAPI includes as one route (``_IncludedRouter``, 0.12x on), read
    through the paths it resolves its routes to (its prefixes included), nested ones too."""
    for candidate in router.effective_candidates():
        if hasattr(candidate, "effective_candidates"):
            yield from _included(candidate, prefix, below, guarded)
            continue
        original = getattr(candidate, "original_route", None)
        built = getattr(candidate, "starlette_route", None)  # a websocket's path is there
        path = str(candidate.path or getattr(built, "path", "") or getattr(original, "path", ""))
        if isinstance(original, Mount):  # an app of its own below the router: any path
            yield AppRoute(prefix + path + "/{path:path}", below + path + "/x", ("*",), guarded)
        elif type(original).__name__.endswith("WebSocketRoute"):
            yield AppRoute(prefix + path, below + _sample(path), ("WEBSOCKET",), guarded)
        else:
            methods = tuple(sorted(getattr(candidate, "methods", None) or ())) or ("*",)
            yield AppRoute(prefix + path, below + _sample(path), methods, guarded)


def _litestar_route(route: Any, prefix: str, below: str, guarded: bool) -> Iterator[AppRoute]:
    path = str(route.path)
    kind = type(route).__name__
    if kind == "ASGIRoute" and getattr(route.route_handler, "is_mount", False):
        yield AppRoute(prefix + path + "/{path:path}", below + path + "/x", ("*",), guarded)
    elif kind == "WebSocketRoute":
        yield AppRoute(prefix + path, below + _sample(path), ("WEBSOCKET",), guarded)
    else:
        methods = tuple(sorted(getattr(route, "methods", None) or ())) or ("*",)
        yield AppRoute(prefix + path, below + _sample(path), methods, guarded)


# {name}, {name:type} (Starlette, Litestar) and <name>, <type:name> (Werkzeug)
_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}|<(?:(\w+):)?(\w+)>")
_SAMPLES = {
    "int": "1",
    "float": "1.0",
    "decimal": "1.0",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "path": "x/y",
    "date": "2026-01-01",
}


def _sample(template: str) -> str:
    """A path the template accepts: each parameter its name, or a value of its type."""

    def value(match: re.Match[str]) -> str:
        name = match[1] or match[4]
        kind = match[2] or match[3]
        return _SAMPLES.get(kind or "", name)

    return _PARAM.sub(value, template)


_SAYS = {
    "matched": "{route}",
    "exempt": "{route} (exempt)",
    "unmatched": "{route} (unmatched: {route})",
    "refused": "404 (unmatched: refuse)",
    "unguarded": "UNGUARDED",
    "outside": "UNGUARDED (outside every Guardrail of the app)",
}


def render(result: Coverage, policy: Policy, app_ref: str) -> str:
    """The table ``guardrail routes`` prints."""
    width = max([len(row.path) for row in result.rows] + [4]) + 2
    lines = [
        f"{app_ref} ({result.framework}) against {policy.source} (unmatched: {policy.unmatched})",
        f"{'METHOD':<10}{'PATH':<{width}}POLICY ROUTE",
    ]
    for row in result.rows:
        says = _SAYS[row.how].format(route=row.route)
        lines.append(f"{row.method:<10}{row.path:<{width}}{says}")
    if result.unused:
        lines += ["", "policy routes that match no route of the app (a typo?):"]
        for index, name, pattern in result.unused:
            unmatched = " (used as unmatched:)" if name == policy.unmatched else ""
            lines.append(f"  routes[{index}] {name}: {pattern}{unmatched}")
    posts = result.unguarded_posts
    if posts:
        noun = "route" if len(posts) == 1 else "routes"
        lines += [
            "",
            f"{len(posts)} {noun} taking POST unguarded: add routes for them, or set "
            "unmatched: to a route's name (its limits) or refuse",
        ]
    return "\n".join(lines)


def as_dict(result: Coverage, policy: Policy, app_ref: str) -> dict[str, Any]:
    return {
        "app": app_ref,
        "framework": result.framework,
        "policy": policy.source,
        "unmatched": policy.unmatched,
        "routes": [
            {"method": r.method, "path": r.path, "policy_route": r.route, "how": r.how}
            for r in result.rows
        ],
        "unused_policy_routes": [
            {"index": index, "name": name, "path": pattern}
            for index, name, pattern in result.unused
        ],
        "unguarded_posts": len(result.unguarded_posts),
    }
