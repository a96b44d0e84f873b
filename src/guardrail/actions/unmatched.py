"""``unmatched: refuse``: a request no route of the policy matches gets a 404.

404, not 403: the policy lists what the API serves, and a path outside it is, to a client, not
part of the API (its answer looks like any unknown path's, telling a scanner nothing); SDKs do
not retry a 404 (OpenAI's raises NotFoundError); and a 403 from guardrail means a client was
judged (challenge, block), which this is not.
"""

from __future__ import annotations

from starlette.types import Send

from guardrail.actions.problem import Headers, send_problem


async def send_unmatched(send: Send, *, request_id: str, headers: Headers) -> None:
    await send_problem(
        send,
        404,
        problem="not-found",
        title="Not Found",
        detail="nothing is served at this path",
        error_type="invalid_request_error",
        request_id=request_id,
        headers=headers,
    )
