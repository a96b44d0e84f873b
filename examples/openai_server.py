"""An OpenAI-compatible model server (fake model) wrapped by guardrail.

Run it:
    GUARDRAIL_SECRET=change-me uvicorn --factory examples.openai_server:create_app

then call it with any OpenAI SDK (base_url http://127.0.0.1:8000/v1, any API key).
The two lines that add guardrail are marked below.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from guardrail import Guardrail  # 1/2

POLICY = Path(__file__).with_name("policy.yaml")


def fake_completion(prompt: str, max_tokens: int) -> list[str]:
    """A deterministic 'model': a short answer built from the prompt's words."""
    words = prompt.split() or ["hello"]
    answer = ["Here", "is", "an", "answer", "about", *words[:8], "and", "that", "is", "all."]
    return [w + " " for w in answer][: max(1, max_tokens)]


def build_app() -> FastAPI:
    app = FastAPI(title="fake OpenAI-compatible server")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "fake-1", "object": "model", "owned_by": "demo"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        try:
            body = await request.json()
            messages = body["messages"]
            prompt = " ".join(
                str(m.get("content", "")) for m in messages if m.get("role") == "user"
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return JSONResponse(
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "invalid_body",
                        "message": "expected a JSON body with a `messages` list",
                        "param": None,
                    }
                },
                status_code=400,
            )
        tokens = fake_completion(prompt, int(body.get("max_tokens") or 64))
        model = str(body.get("model", "fake-1"))
        usage = {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": len(tokens),
            "total_tokens": len(prompt.split()) + len(tokens),
        }
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        created = int(time.time())
        if body.get("stream"):
            return StreamingResponse(
                _stream(
                    completion_id,
                    created,
                    model,
                    tokens,
                    usage,
                    bool((body.get("stream_options") or {}).get("include_usage")),
                ),
                media_type="text/event-stream",
            )
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "".join(tokens).strip()},
                }
            ],
            "usage": usage,
        }

    return app


async def _stream(
    completion_id: str,
    created: int,
    model: str,
    tokens: list[str],
    usage: dict[str, int],
    include_usage: bool,
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, str], finish: str | None) -> str:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(payload)}\n\n"

    yield chunk({"role": "assistant", "content": ""}, None)
    for token in tokens:
        yield chunk({"content": token}, None)
    yield chunk({}, "stop")
    if include_usage:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        yield f"data: {json.dumps(payload)}\n\n"
    yield "data: [DONE]\n\n"


def create_app(**guardrail_options: Any) -> Guardrail:
    """The served app: the fake model behind guardrail (options: clock, sleep, storage, audit)."""
    return Guardrail(
        build_app(),
        policy=guardrail_options.pop("policy", POLICY),  # 2/2
        **guardrail_options,
    )
