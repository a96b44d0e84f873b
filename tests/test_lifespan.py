"""lifespan.py: guardrail starts with the app, and a guardrail that cannot start fails the
server's startup (``lifespan.startup.failed``) whatever the app does with lifespan events."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

from guardrail.lifespan import lifespan


class Guard:
    """A Lifecycle (what ``lifespan`` needs of a Guardrail) whose start fails as told."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[str] = []

    async def startup(self) -> None:
        self.calls.append("startup")
        if self.error is not None:
            raise self.error

    async def shutdown(self) -> None:
        self.calls.append("shutdown")


async def run(guard: Guard, app: Any) -> list[Message]:
    incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await lifespan(guard, app, {"type": "lifespan"}, receive, send)
    return sent


async def no_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    raise ValueError("Django can only handle ASGI/HTTP connections, not lifespan.")


async def lets_errors_through(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()  # guardrail's error, raised in the app, which does not report it
    await send({"type": "lifespan.startup.complete"})


@asynccontextmanager
async def app_lifespan(app: Starlette):  # type: ignore[no-untyped-def]
    yield


def starlette() -> Starlette:
    return Starlette(lifespan=app_lifespan)


@pytest.mark.parametrize(
    "app",
    [no_lifespan, lets_errors_through, starlette()],  # Starlette reads the startup unguarded
    ids=["no-lifespan", "lets-errors-through", "starlette"],
)
async def test_a_guardrail_that_cannot_start_fails_the_startup(app: Any) -> None:
    guard = Guard(OSError("audit trail: Permission denied"))
    sent = await run(guard, app)
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    assert "OSError" in sent[0]["message"] and "Permission denied" in sent[0]["message"]
    assert guard.calls[0] == "startup"


@pytest.mark.parametrize("app", [no_lifespan, starlette()], ids=["no-lifespan", "starlette"])
async def test_a_guardrail_that_starts_starts_and_stops_with_the_app(app: Any) -> None:
    guard = Guard()
    sent = await run(guard, app)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert guard.calls == ["startup", "shutdown"]
