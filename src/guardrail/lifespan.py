"""ASGI lifespan: guardrail starts and stops its own resources with the app's.

The audit trail must be flushed at shutdown above all. An app that does not speak lifespan is
answered on its behalf, so guardrail still starts and stops.
"""

from __future__ import annotations

from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Lifecycle(Protocol):
    async def startup(self) -> None: ...

    async def shutdown(self) -> None: ...


async def lifespan(
    guard: Lifecycle, app: ASGIApp, scope: Scope, receive: Receive, send: Send
) -> None:
    took_startup = False

    async def lifespan_receive() -> Message:
        nonlocal took_startup
        message = await receive()
        if message["type"] == "lifespan.startup":
            took_startup = True
            await guard.startup()
        return message

    async def lifespan_send(message: Message) -> None:
        if message["type"] in (
            "lifespan.shutdown.complete",
            "lifespan.shutdown.failed",
            "lifespan.startup.failed",  # the app will not serve: release what we started
        ):
            await guard.shutdown()
        await send(message)

    try:
        await app(scope, lifespan_receive, lifespan_send)
    except Exception:
        if took_startup:
            raise
        await _own_lifespan(guard, receive, send)
        return
    if not took_startup:
        await _own_lifespan(guard, receive, send)


async def _own_lifespan(guard: Lifecycle, receive: Receive, send: Send) -> None:
    # The app does not speak lifespan: answer the server on the app's behalf.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await guard.startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await guard.shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
