"""ASGI lifespan: guardrail starts and stops its own resources with the app's.

The audit trail must be flushed at shutdown above all. An app that does not speak lifespan is
answered on its behalf, so guardrail still starts and stops. If guardrail cannot start, the
server is told with ``lifespan.startup.failed`` (it exits): an exception escaping here would be
taken for "lifespan unsupported" and the server would serve without it.
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
    took_startup = answered = False
    failure: Exception | None = None

    async def lifespan_receive() -> Message:
        nonlocal took_startup, failure
        message = await receive()
        if message["type"] == "lifespan.startup":
            took_startup = True
            try:
                await guard.startup()
            except Exception as exc:
                failure = exc  # the app is told too: its startup fails with it
                raise
        return message

    async def lifespan_send(message: Message) -> None:
        nonlocal answered
        answered = answered or message["type"].startswith("lifespan.startup.")
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
        if failure is not None and not answered:  # the app let guardrail's error through
            await send(_failed(failure))
            return
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
            try:
                await guard.startup()
            except Exception as exc:
                await send(_failed(exc))
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await guard.shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


def _failed(error: Exception) -> Message:
    message = f"guardrail could not start: {type(error).__name__}: {error}"
    return {"type": "lifespan.startup.failed", "message": message}
