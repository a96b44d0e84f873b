"""The block action: 403, for subjects whose score reached the top band."""

from __future__ import annotations

from starlette.types import Send

from guardrail.actions.problem import Headers, send_problem


async def send_blocked(send: Send, *, request_id: str, headers: Headers) -> None:
    await send_problem(
        send,
        403,
        problem="abnormal-usage-detected",
        title="Forbidden",
        detail=(
            "Requests from this client were blocked for abnormal usage. If you think this is "
            f"a mistake, contact the operator of this API and quote request id {request_id}."
        ),
        error_type="blocked",
        request_id=request_id,
        headers=[(b"guardrail-action", b"block"), (b"cache-control", b"no-store"), *headers],
    )
