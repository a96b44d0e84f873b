"""A stand-in for LiteLLM's proxy (not installed): one chat endpoint at the four paths LiteLLM
serves it on, its model list, and a health check. ``guardrail routes`` imports it as
``tests.deploy._litellm_standin:app``; ``guarded(policy, audit)`` wraps it for serving."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

CHAT_PATHS = (
    "/v1/chat/completions",
    "/chat/completions",
    "/engines/{model}/chat/completions",
    "/openai/deployments/{model}/chat/completions",
)

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


async def chat(request: Request) -> JSONResponse:
    body: dict[str, Any] = await request.json()
    reply = {"role": "assistant", "content": "hi"}
    return JSONResponse(
        {
            "object": "chat.completion",
            "model": body.get("model", "m"),
            "choices": [{"index": 0, "message": reply, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
    )


for _path in CHAT_PATHS:
    app.add_api_route(_path, chat, methods=["POST"])


@app.get("/v1/models")
async def models() -> JSONResponse:
    return JSONResponse({"object": "list", "data": [{"id": "m", "object": "model"}]})


@app.get("/health/liveliness")
async def health() -> PlainTextResponse:
    return PlainTextResponse("I'm alive!")
