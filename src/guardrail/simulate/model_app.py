"""A stand-in model server for ``guardrail simulate`` where the example app cannot be imported
(an installed package, outside the repository, or without the ``demo`` extra's FastAPI).

Pure ASGI and the standard library. It answers the OpenAI routes the simulated clients call,
JSON or streamed (SSE), with a deterministic answer and its ``usage``, so token budgets are
settled as a real server's answers would settle them. The example app
(``examples/openai_server.py``) writes text a token at a time and counts tokens its own way:
the README's simulation figures are from it, and a run on this one differs a little.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from starlette.types import Receive, Scope, Send

NATURAL_LENGTH = 160  # tokens an answer runs to when max_tokens does not stop it
_ROUTES = {"/v1/chat/completions": "chat", "/v1/completions": "text", "/v1/responses": "text"}


def build_app() -> Any:
    """The ASGI app (what ``--app MODULE:FACTORY`` names)."""
    return model_app


async def model_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    kind = _ROUTES.get(scope["path"])
    request = _json(body)
    if kind is None or scope["method"] != "POST" or request is None:
        await _send(send, 404 if kind is None else 400, b'{"error":{"message":"not served"}}')
        return
    prompt = json.dumps(request.get("messages") or request.get("prompt") or request.get("input"))
    limit = request.get("max_completion_tokens", request.get("max_tokens"))
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big")
    completion = NATURAL_LENGTH - seed % 40
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 <= limit < completion:
        completion = limit
    text = " ".join("token" for _ in range(completion))
    usage = {
        "prompt_tokens": len(prompt.split()),
        "completion_tokens": completion,
        "total_tokens": len(prompt.split()) + completion,
    }
    if kind == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
    else:
        choice = {"index": 0, "text": text}
    answer = {"id": f"sim-{seed:08x}", "object": "completion", "choices": [choice]}
    if request.get("stream") is True:
        delta = {"index": 0, "delta": {"content": text}} if kind == "chat" else choice
        events = [{**answer, "choices": [delta]}, {**answer, "choices": [], "usage": usage}]
        payload = "".join(f"data: {json.dumps(event)}\n\n" for event in events)
        await _send(send, 200, (payload + "data: [DONE]\n\n").encode(), "text/event-stream")
        return
    await _send(send, 200, json.dumps({**answer, "usage": usage}).encode())


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def _send(send: Send, status: int, body: bytes, kind: str = "application/json") -> None:
    headers = [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
