"""408: the request body did not arrive within the route's ``inspect_timeout``."""

from __future__ import annotations

from starlette.types import Send

from guardrail.actions.problem import Headers, send_problem


async def send_timeout(send: Send, *, waited: float, request_id: str, headers: Headers) -> None:
    await send_problem(
        send,
        408,
        problem="request-timeout",
        title="Request Timeout",
        detail=f"The request body did not arrive within {waited:g} seconds.",
        error_type="request_timeout",
        request_id=request_id,
        # The rest of the body may still come, or never: the connection cannot be reused.
        headers=[(b"connection", b"close"), *headers],
    )
