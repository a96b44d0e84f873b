"""LLM tokens on the wire: what a request asks for, and what its response used.

A ``Meter`` reads one protocol. ``OPENAI`` reads the three OpenAI-compatible shapes that most
Python model servers expose (vLLM, LitServe, BentoML and FastAPI fronts): chat completions
(``messages``), completions (``prompt``) and responses (``input``), JSON and streamed.

Counts without a tokenizer are estimates, about four bytes of UTF-8 a token. They only size a
reservation or stand in for a ``usage`` the server did not send; a response's own ``usage``
always wins.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

#: Tokens a message costs besides its text (role, separators): OpenAI documents 3 to 4.
MESSAGE_OVERHEAD = 4


class Ask(NamedTuple):
    """What a request asks of the model, in tokens."""

    prompt: int  # estimated input tokens
    output: int | None  # the output cap it names (max_tokens and kin), None when it names none
    choices: int  # completions generated per request (n, best_of)


class Meter(Protocol):
    """One protocol's view of a JSON request and its response. Name an object with these
    methods in a route's ``inspect`` ("module:attribute") to meter another protocol. Payloads
    are parsed JSON objects; a meter never raises on an object of another shape (it answers
    0, None or "")."""

    def prompt(self, body: dict[str, Any]) -> str:
        """The newest user text, which the risk signals read."""
        ...

    def ask(self, body: dict[str, Any]) -> Ask:
        """The request's prompt estimate, output cap and choices."""
        ...

    def cap(self, body: dict[str, Any], max_tokens: int) -> bool:
        """Cap the output tokens in place (adding the cap when the body names none);
        True when the body changed."""
        ...

    def strip(self, body: dict[str, Any], what: frozenset[str]) -> bool:
        """Remove ``logprobs`` and/or ``n`` (more than one choice) in place; True if changed."""
        ...

    def usage(self, payload: dict[str, Any]) -> int | None:
        """Total tokens a response (or a stream's final event) reports, if it reports them."""
        ...

    def streamed(self, payload: dict[str, Any]) -> int:
        """Output tokens carried by one streamed event (an estimate from its text)."""
        ...


def text_tokens(text: str) -> int:
    """Input estimate: four bytes of UTF-8 a token, rounded up (CJK counts heavier, as it is)."""
    return (len(text.encode("utf-8", "surrogatepass")) + 3) // 4


def delta_tokens(text: str) -> int:
    """A streamed piece of output. Servers stream a token a piece (OpenAI, vLLM, TGI), and a
    token is rarely over 16 bytes: a longer piece carries several, four bytes a token."""
    if len(text) <= 4:  # at most 16 bytes whatever the characters: the usual piece
        return 1
    size = len(text.encode("utf-8", "surrogatepass"))
    return 1 if size <= 16 else (size + 3) // 4


#: The text fields of a chat delta that carry generated output.
_DELTA_TEXT = frozenset({"content", "reasoning_content", "reasoning", "refusal"})


def _content_tokens(content: object) -> int:
    if isinstance(content, str):
        return text_tokens(content)
    if isinstance(content, list):  # parts: [{"type": "text", "text": "…"}, …], or token ids
        total = 0
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    total += text_tokens(text)
            elif isinstance(part, str):
                total += text_tokens(part)
            elif type(part) is int:
                total += 1
        return total
    return 0


def _whole(value: object) -> int | None:
    # bool is an int to isinstance, and `true` is no token count
    return value if type(value) is int and 0 <= value < 2**31 else None


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": "…"}, …]
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


class OpenAIMeter:
    """Chat completions, completions and responses, told apart by their body's keys."""

    def prompt(self, body: dict[str, Any]) -> str:
        messages = body.get("messages")
        if isinstance(messages, list):
            for message in reversed(messages):
                if isinstance(message, dict) and message.get("role") == "user":
                    return _text(message.get("content"))
            return ""
        if "prompt" in body:
            return _text(body["prompt"])
        if "input" in body:
            items = body["input"]
            if isinstance(items, list):  # responses: the newest user item
                for item in reversed(items):
                    if isinstance(item, dict) and item.get("role", "user") == "user":
                        return _text(item.get("content"))
                return ""
            return _text(items)
        return ""

    def ask(self, body: dict[str, Any]) -> Ask:
        messages = body.get("messages")
        if isinstance(messages, list):
            prompt = sum(
                _content_tokens(m.get("content")) + MESSAGE_OVERHEAD
                for m in messages
                if isinstance(m, dict)
            )
            output = _whole(body.get("max_completion_tokens"))
            if output is None:
                output = _whole(body.get("max_tokens"))
            return Ask(prompt, output, _whole(body.get("n")) or 1)
        if "input" in body:
            items = body["input"]
            prompt = _content_tokens(body.get("instructions"))
            if isinstance(items, list):
                for item in items:
                    if isinstance(item, dict):
                        prompt += _content_tokens(item.get("content")) + MESSAGE_OVERHEAD
                    else:
                        prompt += _content_tokens(item)
            else:
                prompt += _content_tokens(items)
            return Ask(prompt, _whole(body.get("max_output_tokens")), 1)
        prompt_field = body.get("prompt")
        choices = max(_whole(body.get("n")) or 1, _whole(body.get("best_of")) or 1)
        # A list of strings, or of token-id lists, is a batch: a completion for each prompt.
        if isinstance(prompt_field, list) and prompt_field and not isinstance(prompt_field[0], int):
            prompts = len(prompt_field)
            prompt = sum(
                len(p) if isinstance(p, list) else _content_tokens(p) for p in prompt_field
            )
            return Ask(prompt, _whole(body.get("max_tokens")), choices * prompts)
        return Ask(_content_tokens(prompt_field), _whole(body.get("max_tokens")), choices)

    def cap(self, body: dict[str, Any], max_tokens: int) -> bool:
        if "input" in body and "messages" not in body:
            keys: tuple[str, ...] = ("max_output_tokens",)
        elif "messages" in body:
            keys = ("max_tokens", "max_completion_tokens")
        else:
            keys = ("max_tokens",)
        present = [key for key in keys if key in body]
        changed = False
        for key in present:
            value = _whole(body[key])
            if value is None or value > max_tokens:  # a malformed value gets the cap too
                body[key] = max_tokens
                changed = True
        if not present:
            body[keys[0]] = max_tokens
            changed = True
        return changed

    def strip(self, body: dict[str, Any], what: frozenset[str]) -> bool:
        changed = False
        if "logprobs" in what:
            for key in ("logprobs", "top_logprobs"):
                if key in body:
                    del body[key]
                    changed = True
            include = body.get("include")
            if isinstance(include, list):
                kept = [i for i in include if not (isinstance(i, str) and "logprobs" in i)]
                if len(kept) != len(include):
                    body["include"] = kept
                    changed = True
        if "n" in what:
            for key in ("n", "best_of"):
                if key in body and body[key] != 1:
                    del body[key]  # the default is one choice
                    changed = True
        return changed

    def usage(self, payload: dict[str, Any]) -> int | None:
        usage = payload.get("usage")
        if not isinstance(usage, dict):
            response = payload.get("response")  # responses streams: response.completed
            usage = response.get("usage") if isinstance(response, dict) else None
            if not isinstance(usage, dict):
                return None
        total = _whole(usage.get("total_tokens"))
        if total is not None:
            return total
        parts = [
            _whole(usage.get(key))
            for key in ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens")
        ]
        known = [p for p in parts if p is not None]
        return sum(known) if known else None

    def streamed(self, payload: dict[str, Any]) -> int:
        # Runs on every streamed event: exact types and one pass over each delta's keys.
        choices = payload.get("choices")
        total = 0
        if type(choices) is list:
            for choice in choices:
                if type(choice) is not dict:
                    continue
                delta = choice.get("delta")
                if type(delta) is dict:  # chat
                    for key, value in delta.items():
                        if key in _DELTA_TEXT:
                            if type(value) is str and value:
                                total += delta_tokens(value)
                        elif key == "tool_calls" and type(value) is list:
                            total += _arguments_tokens(value)
                else:  # completions
                    text = choice.get("text")
                    if type(text) is str and text:
                        total += delta_tokens(text)
            return total
        delta = payload.get("delta")  # responses: response.output_text.delta and kin
        kind = payload.get("type")
        if type(delta) is str and delta and type(kind) is str and kind.endswith(".delta"):
            return delta_tokens(delta)
        return 0


def _arguments_tokens(calls: list[Any]) -> int:
    total = 0
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if isinstance(arguments, str) and arguments:
            total += delta_tokens(arguments)
    return total


OPENAI: Meter = OpenAIMeter()


METER_METHODS = ("prompt", "ask", "cap", "strip", "usage", "streamed")
