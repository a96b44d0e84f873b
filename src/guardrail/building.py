"""Who builds a Guardrail, and what it is when it cannot be built.

``Guardrail(app, policy=...)`` raises its error at once, where it is written. Starlette and
FastAPI build ``add_middleware(Guardrail, ...)`` and ``middleware=[Middleware(Guardrail, ...)]``
later, on the app's first ASGI call: the lifespan startup. An error raised there is taken by
uvicorn and Hypercorn for "lifespan unsupported"; the server starts and answers every request
500. So a guardrail built that way that cannot be built becomes ``Unstarted``: it fails the
lifespan startup with the whole error (the server exits), and where no lifespan runs (Daphne,
``--lifespan off``) it answers every request 503. Whatever fails (the policy, a secret, a meter
to import, a storage or audit URI) takes that one path.

Frameworks that build middleware once per route handler (Litestar's ``middleware=[...]``,
Starlette's ``Route(..., middleware=...)``) would make a guardrail per handler, each with its
own limits and audit chain, no lifespan and no ``/.guardrail/`` pages: refused, with the fix.

All of it is read once, when guardrail is built, from the frame that builds it.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from types import FrameType
from typing import Concatenate, ParamSpec, TypeVar

from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from guardrail.actions.problem import send_problem
from guardrail.decision import RequestIds
from guardrail.errors import DeploymentError

logger = logging.getLogger("guardrail")

P = ParamSpec("P")
G = TypeVar("G")

_WHAT_BREAKS = (
    "each would be a guardrail of its own: limits per handler (a client gets every one's "
    "burst), one audit hash chain each, no lifespan (nothing flushes the trail at shutdown) "
    "and no /.guardrail/ pages (challenges answer 404)"
)


def _builder() -> FrameType | None:
    """The frame building the guardrail: the first one outside guardrail's own code."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("guardrail."):
        frame = frame.f_back
    return frame


def _per_handler(frame: FrameType) -> str | None:
    """The fix, when ``frame`` is a framework building middleware once per route handler."""
    module = frame.f_globals.get("__name__", "")
    if module.partition(".")[0] == "litestar":
        return (
            "Litestar builds middleware=[DefineMiddleware(Guardrail, ...)] once per route "
            f"handler: {_WHAT_BREAKS}. Wrap the application instead: "
            "app = Guardrail(Litestar(route_handlers=[...]), policy=...)"
        )
    if module == "starlette.routing" and isinstance(
        frame.f_locals.get("self"), (Route, WebSocketRoute)
    ):
        return (
            "Starlette builds Route(..., middleware=[Middleware(Guardrail, ...)]) for that "
            f"route alone: {_WHAT_BREAKS}. Guard the application instead "
            "(app.add_middleware(Guardrail, policy=...)) and name the route in the policy's "
            "routes"
        )
    return None


def built_lazily() -> bool:
    """Whether the guardrail being built is built by a Starlette (or FastAPI) app on its first
    ASGI call. Raises DeploymentError where a framework builds one per route handler."""
    frame = _builder()
    for _ in range(2):  # the builder, or the framework calling a factory (lambda app: ...)
        if frame is None:
            return False
        fix = _per_handler(frame)
        if fix is not None:
            raise DeploymentError(fix)
        if frame.f_code.co_name == "build_middleware_stack":
            return True
        frame = frame.f_back
    return False


def deferring(
    init: Callable[Concatenate[G, P], None],
) -> Callable[Concatenate[G, P], None]:
    """Wraps ``Guardrail.__init__``: built lazily, what fails is told at startup instead."""

    def build(guard: G, /, *args: P.args, **kwargs: P.kwargs) -> None:
        lazily = built_lazily()
        try:
            init(guard, *args, **kwargs)
        except Exception as exc:
            if not lazily:
                raise
            unstarted(guard, exc)

    functools.update_wrapper(build, init)
    return build


def unstarted(guard: object, error: Exception) -> None:
    # The app keeps the object its build returned: that object becomes the refusing guard.
    guard.__class__ = Unstarted
    assert isinstance(guard, Unstarted)
    guard.error = error
    guard.request_ids = RequestIds()
    logger.error(
        "guardrail could not start: %s: %s\nThe server is told so at lifespan startup (and "
        "exits); without lifespan events, every request is answered 503 until it is fixed.",
        type(error).__name__,
        error,
    )


class Unstarted:
    """What a lazily built guardrail is when it could not be built: the lifespan startup
    fails with its error; every request and websocket is refused; nothing reaches the app."""

    error: Exception
    request_ids: RequestIds

    @property
    def reason(self) -> str:
        summary = str(self.error).partition("\n")[0].rstrip(":")
        return f"{type(self.error).__name__}: {summary}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            message = await receive()
            if message["type"] == "lifespan.startup":
                error = f"{type(self.error).__name__}: {self.error}"
                await send({"type": "lifespan.startup.failed", "message": error})
        elif kind == "http":
            # Not the error in full: its file, lines and values are the operator's (the log's).
            await send_problem(
                send,
                503,
                problem="guardrail-not-started",
                title="Service Unavailable",
                detail=f"guardrail could not start ({self.reason}); the server's log has the "
                "whole error. No request is served until it is fixed.",
                error_type="service_unavailable",
                request_id=self.request_ids(),
                headers=[],
            )
        elif kind == "websocket":
            await receive()  # websocket.connect; closed before accept: the server sends 403
            await send({"type": "websocket.close", "code": 1011, "reason": "guardrail not started"})

    async def startup(self) -> None:
        raise self.error

    async def shutdown(self) -> None:
        return None

    aclose = shutdown
