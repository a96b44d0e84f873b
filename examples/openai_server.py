"""An OpenAI-compatible model server (a fake model) wrapped by guardrail.

Run it:
    GUARDRAIL_SECRET=change-me uvicorn --factory examples.openai_server:create_app

then call it with any OpenAI SDK (base_url http://127.0.0.1:8000/v1, any API key). It serves
chat completions, completions and responses, JSON and streamed (SSE), like vLLM's server:
the model writes one token at a time, TOKEN_LATENCY apart, honours max_tokens (and its kin)
and n, and reports usage. The two lines that add guardrail are marked below.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from guardrail import Guardrail  # 1/2

POLICY = Path(__file__).with_name("policy.yaml")

#: Seconds between two generated tokens: about 50 tokens a second, a mid-size model's pace.
TOKEN_LATENCY = 0.02

_WORD = re.compile(r"\w+|[^\w\s]")
_FILLER = _WORD.findall(
    "the answer depends on a few things , and the first is what you need it for . in "
    "short , start with the simplest version that works , measure it , and then change "
    "one thing at a time . most of the cost is in the details : the data , the edge "
    "cases and the way the parts fit together . here is how i would think about it ."
)


#: The fake model's tokenizer, cut as BPE pre-tokenizers cut text: a run of letters, up to
#: three digits, one CJK/Kana/Hangul character, one punctuation mark.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W\d_{_CJK}]+|\d{{1,3}}|[^\w\s]|_")


def count_tokens(text: str) -> int:
    """The fake model's tokenizer: a word, up to three digits, a CJK character or a
    punctuation mark is a token."""
    return len(_TOKEN.findall(text))


@dataclass
class FakeModel:
    """Deterministic text, one token at a time: ``latency`` apart on the injected ``sleep``."""

    latency: float = 0.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)
    natural_length: int = 160  # tokens an answer runs to when max_tokens does not stop it

    def answer(self, prompt: str, max_tokens: int | None, choice: int = 0) -> tuple[list[str], str]:
        """The answer's tokens (each with its leading space) and its finish reason."""
        words = _WORD.findall(prompt)[:8] or ["hello"]
        seed = int.from_bytes(hashlib.sha256(f"{choice}:{prompt}".encode()).digest()[:4], "big")
        length = self.natural_length - seed % 40
        opening = ["Here", " is", " an", " answer", " about", *(f" {w}" for w in words), " ."]
        filler = [f" {_FILLER[(seed + i * 7) % len(_FILLER)]}" for i in range(length)]
        tokens = [*opening, *filler][:length]
        if max_tokens is not None and max_tokens < length:
            return tokens[:max_tokens], "length"
        return tokens, "stop"

    async def write(self, answers: list[tuple[list[str], str]]) -> None:
        """A whole answer's time, for a response that is not streamed."""
        if self.latency:
            await self.sleep(self.latency * sum(len(tokens) for tokens, _ in answers))

    async def stream(self, tokens: list[str]) -> AsyncIterator[str]:
        for token in tokens:
            if self.latency:
                await self.sleep(self.latency)
            yield token


def _error(message: str) -> JSONResponse:
    error = {"type": "invalid_request_error", "code": "invalid_body", "message": message}
    return JSONResponse({"error": {**error, "param": None}}, status_code=400)


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and "text" in p)
    return ""


def _sse(payload: dict[str, Any], event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload)}\n\n"


def build_app(model: FakeModel | None = None) -> FastAPI:
    model = model or FakeModel()
    app = FastAPI(title="fake OpenAI-compatible server")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "fake-1", "object": "model", "owned_by": "demo"}]}

    async def body_of(request: Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await body_of(request)
        messages = None if body is None else body.get("messages")
        if body is None or not isinstance(messages, list):
            return _error("expected a JSON body with a `messages` list")
        prompt = " ".join(
            _text(m.get("content"))
            for m in messages
            if isinstance(m, dict) and m.get("role") == "user"
        )
        max_tokens = _whole(body.get("max_completion_tokens", body.get("max_tokens")))
        n = _whole(body.get("n")) or 1
        answers = [model.answer(prompt, max_tokens, i) for i in range(n)]
        completion = Completion("chatcmpl", str(body.get("model", "fake-1")), count_tokens(prompt))
        if body.get("stream") is True:
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return _streaming(completion.chat_stream(model, answers, usage))
        await model.write(answers)
        return completion.chat(answers)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body = await body_of(request)
        prompt = None if body is None else body.get("prompt")
        if body is None or not isinstance(prompt, str):
            return _error("expected a JSON body with a `prompt` string")
        max_tokens = _whole(body.get("max_tokens"))
        answers = [
            model.answer(prompt, 16 if max_tokens is None else max_tokens, i)
            for i in range(_whole(body.get("n")) or 1)
        ]
        completion = Completion("cmpl", str(body.get("model", "fake-1")), count_tokens(prompt))
        if body.get("stream") is True:
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return _streaming(completion.text_stream(model, answers, usage))
        await model.write(answers)
        return completion.text(answers)

    @app.post("/v1/responses")
    async def responses(request: Request) -> Any:
        body = await body_of(request)
        items = None if body is None else body.get("input")
        if body is None or not isinstance(items, (str, list)):
            return _error("expected a JSON body with an `input` string or list")
        prompt = (
            _text(items)
            if isinstance(items, str)
            else " ".join(_text(i.get("content")) for i in items if isinstance(i, dict))
        )
        answer = model.answer(prompt, _whole(body.get("max_output_tokens")))
        completion = Completion("resp", str(body.get("model", "fake-1")), count_tokens(prompt))
        if body.get("stream") is True:
            return _streaming(completion.response_stream(model, answer))
        await model.write([answer])
        return completion.response(answer)

    return app


def _streaming(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream")


@dataclass
class Completion:
    """One response's envelope in each of the three shapes, JSON and streamed."""

    kind: str
    model: str
    prompt_tokens: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created: int = field(default_factory=lambda: int(time.time()))

    def usage(self, completion_tokens: int) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        }

    def _head(self, obj: str) -> dict[str, Any]:
        return {
            "id": f"{self.kind}-{self.id}",
            "object": obj,
            "created": self.created,
            "model": self.model,
        }

    def chat(self, answers: list[tuple[list[str], str]]) -> dict[str, Any]:
        choices = [
            {
                "index": i,
                "finish_reason": finish,
                "message": {"role": "assistant", "content": "".join(tokens)},
                "logprobs": None,
            }
            for i, (tokens, finish) in enumerate(answers)
        ]
        used = sum(len(tokens) for tokens, _ in answers)
        return {**self._head("chat.completion"), "choices": choices, "usage": self.usage(used)}

    async def chat_stream(
        self, model: FakeModel, answers: list[tuple[list[str], str]], include_usage: bool
    ) -> AsyncIterator[str]:
        head = self._head("chat.completion.chunk")

        def chunk(index: int, delta: dict[str, str], finish: str | None) -> str:
            choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
            return _sse({**head, "choices": [choice]})

        for index, (tokens, finish) in enumerate(answers):
            yield chunk(index, {"role": "assistant", "content": ""}, None)
            async for token in model.stream(tokens):
                yield chunk(index, {"content": token}, None)
            yield chunk(index, {}, finish)
        if include_usage:
            used = sum(len(tokens) for tokens, _ in answers)
            yield _sse({**head, "choices": [], "usage": self.usage(used)})
        yield "data: [DONE]\n\n"

    def text(self, answers: list[tuple[list[str], str]]) -> dict[str, Any]:
        choices = [
            {"index": i, "text": "".join(tokens), "finish_reason": finish, "logprobs": None}
            for i, (tokens, finish) in enumerate(answers)
        ]
        used = sum(len(tokens) for tokens, _ in answers)
        return {**self._head("text_completion"), "choices": choices, "usage": self.usage(used)}

    async def text_stream(
        self, model: FakeModel, answers: list[tuple[list[str], str]], include_usage: bool
    ) -> AsyncIterator[str]:
        head = self._head("text_completion")
        for index, (tokens, finish) in enumerate(answers):
            async for token in model.stream(tokens):
                choice = {"index": index, "text": token, "finish_reason": None, "logprobs": None}
                yield _sse({**head, "choices": [choice]})
            choice = {"index": index, "text": "", "finish_reason": finish, "logprobs": None}
            yield _sse({**head, "choices": [choice]})
        if include_usage:
            used = sum(len(tokens) for tokens, _ in answers)
            yield _sse({**head, "choices": [], "usage": self.usage(used)})
        yield "data: [DONE]\n\n"

    def response(self, answer: tuple[list[str], str], status: str = "completed") -> dict[str, Any]:
        tokens, finish = answer
        text = "".join(tokens)
        message = {
            "id": f"msg-{self.id}",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        return {
            "id": f"resp-{self.id}",
            "object": "response",
            "created_at": self.created,
            "model": self.model,
            "status": status,
            "incomplete_details": {"reason": "max_output_tokens"} if finish == "length" else None,
            "output": [message] if status == "completed" else [],
            "parallel_tool_calls": False,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": self.prompt_tokens,
                "output_tokens": len(tokens),
                "total_tokens": self.prompt_tokens + len(tokens),
            }
            if status == "completed"
            else None,
        }

    async def response_stream(
        self, model: FakeModel, answer: tuple[list[str], str]
    ) -> AsyncIterator[str]:
        sequence = iter(range(1_000_000))
        started = self.response(answer, status="in_progress")
        yield _sse(
            {"type": "response.created", "response": started, "sequence_number": next(sequence)},
            "response.created",
        )
        async for token in model.stream(answer[0]):
            delta = {
                "type": "response.output_text.delta",
                "item_id": f"msg-{self.id}",
                "output_index": 0,
                "content_index": 0,
                "delta": token,
                "logprobs": [],
                "sequence_number": next(sequence),
            }
            yield _sse(delta, "response.output_text.delta")
        done = {
            "type": "response.completed",
            "response": self.response(answer),
            "sequence_number": next(sequence),
        }
        yield _sse(done, "response.completed")


def create_app(*, model: FakeModel | None = None, **guardrail_options: Any) -> Guardrail:
    """The served app: the fake model behind guardrail (options: policy, clock, sleep, storage,
    audit). The model writes a token every TOKEN_LATENCY seconds of the injected ``sleep``."""
    sleep = guardrail_options.get("sleep") or asyncio.sleep
    model = model or FakeModel(latency=TOKEN_LATENCY, sleep=sleep)
    return Guardrail(
        build_app(model),
        policy=guardrail_options.pop("policy", POLICY),  # 2/2
        **guardrail_options,
    )
