"""RFC 9457 problem responses that OpenAI SDKs can also read (the ``error`` object)."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Send

Headers = list[tuple[bytes, bytes]]


async def send_problem(
    send: Send,
    status: int,
    *,
    problem: str,
    title: str,
    detail: str,
    error_type: str,
    request_id: str,
    headers: Headers,
    extra: dict[str, Any] | None = None,
) -> None:
    body: dict[str, Any] = {"type": problem, "title": title, "status": status, "detail": detail}
    if extra:
        body.update(extra)
    body["request_id"] = request_id
    body["error"] = {"type": error_type, "code": error_type, "message": detail, "param": None}
    payload = json.dumps(body, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
