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


#: ASCII punctuation: in code and markup a mark is often a token of its own.
_MARKS = b"".join(bytes([c]) for c in range(33, 127) if not chr(c).isalnum())
_DIGITS = b"0123456789"
#: Capitals: in identifiers, base64 and other machine text each often starts a token.
_UPPER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: UTF-8 lead bytes by how many tokens a character of theirs may be at least: one for the
#: two-byte scripts (Greek, Cyrillic, Arabic, Hebrew...) and for CJK, Kana and Hangul; two for
#: the three-byte scripts below U+3000 (Indic, Thai, Ethiopic, Georgian...: 1 to 3 tokens a
#: character in cl100k) and for four-byte characters (emoji, CJK extensions).
_LEADS_ONE = bytes(range(0xC2, 0xE0)) + bytes(range(0xE3, 0xF0))
_LEADS_TWO = bytes(range(0xE0, 0xE3)) + bytes(range(0xF0, 0xF5))


def text_tokens(text: str) -> int:
    """Input estimate: four bytes of UTF-8 a token, rounded up, or, when more, a count of the
    pieces a BPE pre-tokenizer (cl100k, o200k, Llama 3's) cuts text into, each at least a
    token: words (a space each), punctuation marks (twice: each may split a word), digits in
    threes, capitals, and non-ASCII characters by script (``_LEADS_*``), or two bytes a token for
    machine text (words over 24 bytes on average: hex, base64). Dense prompts (code,
    digits, machine text, CJK and other scripts) get no discount. Counted with bytes methods,
    in C: a few us a KB, where a regex would cost 70."""
    raw = text.encode("utf-8", "surrogatepass")
    size = len(raw)
    spaces = raw.count(b" ")
    pieces = (
        spaces
        - raw.count(b"  ")  # a run of spaces (indentation) is a token or a few, not one each
        + 2 * (size - len(raw.translate(None, _MARKS)))
        + (size - len(raw.translate(None, _DIGITS))) // 3
        + (size - len(raw.translate(None, _UPPER)))
    )
    if not raw.isascii():
        pieces += (
            size
            - len(raw.translate(None, _LEADS_ONE))
            + 2 * (size - len(raw.translate(None, _LEADS_TWO)))
        )
    elif size > 64 and (spaces + raw.count(b"\n")) * 24 < size:
        # Words over 24 bytes on average: machine text (hex, base64, minified code), which
        # BPE cuts every two bytes or so.
        pieces = max(pieces, (size * 2 + 2) // 3)
    return max((size + 3) // 4, pieces)


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


def _chat_prompt(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if isinstance(messages, list):
        # The newest user turn that says something: a trailing empty one must not hide it.
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                text = _text(message.get("content"))
                if text:
                    return text
    return ""


def earlier_user_turns(body: dict[str, Any]) -> list[str]:
    """The user turns a chat (or responses) body resends before its newest one: the
    conversation so far, as the client holds it."""
    items = body.get("messages")
    if not isinstance(items, list):
        items = body.get("input")
        if not isinstance(items, list):
            return []
    texts = [
        _text(item.get("content"))
        for item in items
        if isinstance(item, dict) and item.get("role", "user") == "user"
    ]
    return texts[:-1]


def opens_conversation(body: dict[str, Any]) -> bool:
    """Is the newest user turn the first one the body sends (no conversation before it)?"""
    items = body.get("messages")
    if not isinstance(items, list):
        items = body.get("input")
        if not isinstance(items, list):
            return True
    users = 0
    for item in items:
        if isinstance(item, dict) and item.get("role", "user") == "user":
            users += 1
            if users > 1:
                return False
    return True


def instructions(body: dict[str, Any]) -> str:
    """What a body tells the model before the user speaks: system and developer messages,
    a top-level ``system`` (Anthropic's shape), ``instructions`` (the responses API)."""
    parts = []
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict) and message.get("role") in ("system", "developer"):
                parts.append(_text(message.get("content")))
    for key in ("system", "instructions"):
        if key in body:
            parts.append(_text(body[key]))
    return "\n".join(part for part in parts if part)


def _completion_prompt(body: dict[str, Any]) -> str:
    return _text(body["prompt"]) if "prompt" in body else ""


def _input_prompt(body: dict[str, Any]) -> str:
    items = body.get("input")
    if isinstance(items, list):  # responses: the newest user item that says something
        for item in reversed(items):
            if isinstance(item, dict) and item.get("role", "user") == "user":
                text = _text(item.get("content"))  # a tool's output item has none
                if text:
                    return text
        return ""
    return _text(items)


def _chat_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    return sum(
        _content_tokens(m.get("content")) + MESSAGE_OVERHEAD
        for m in messages
        if isinstance(m, dict)
    )


def _input_tokens(body: dict[str, Any]) -> int:
    items = body.get("input")
    prompt = _content_tokens(body.get("instructions"))
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict):
                prompt += _content_tokens(item.get("content")) + MESSAGE_OVERHEAD
            else:
                prompt += _content_tokens(item)
    else:
        prompt += _content_tokens(items)
    return prompt


def _completion_tokens(body: dict[str, Any]) -> tuple[int, int]:
    """The prompt's estimate, and how many prompts the body batches."""
    prompt = body.get("prompt")
    # A list of strings, or of token-id lists, is a batch: a completion for each prompt.
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        return sum(len(p) if isinstance(p, list) else _content_tokens(p) for p in prompt), len(
            prompt
        )
    return _content_tokens(prompt), 1


#: Every top-level field an OpenAI-compatible server may honour as an output length, whatever
#: the shape: OpenAI's three, TGI's name, and vLLM's floor (``min_tokens``, which an output
#: cannot stop short of). A body of one shape that names another's is read, not trusted.
LENGTH_FIELDS = (
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "max_new_tokens",
    "min_tokens",
)
#: The fields each shape's server reads as its output cap (the first is the one a tier adds
#: when the body names none).
_OWN_LENGTH = {
    "chat": ("max_tokens", "max_completion_tokens"),
    "completions": ("max_tokens",),
    "responses": ("max_output_tokens",),
}
SHAPES = tuple(_OWN_LENGTH)


def _length(value: object) -> int | None:
    """A length field as a lenient server reads it (pydantic's lax mode takes 64.0 and "64"),
    so that no spelling of a number reserves less than the server will generate. Past 2**31,
    None: no count (the default is reserved and the output watched)."""
    if type(value) is not int:  # the usual spelling first: on every inspected request
        if (type(value) is float and value.is_integer()) or (
            type(value) is str and value.strip().isdecimal() and len(value) < 16
        ):
            value = int(value)
        else:
            return None
    return value if 0 <= value < 2**31 else None


class OpenAIMeter:
    """Chat completions, completions or responses: the ``shape`` the route says (the path its
    request came on), never the body's keys. Without a shape (a path that names none) it is
    conservative: every shape's prompt is read, and every length field reserved and capped."""

    __slots__ = ("_lengths", "_others", "_own", "shape")

    def __init__(self, shape: str | None = None) -> None:
        self.shape = shape
        self._own = _OWN_LENGTH[shape] if shape is not None else LENGTH_FIELDS[:3]
        # the cap reads every honoured field, its own first: the one added when none is there
        self._others = tuple(f for f in LENGTH_FIELDS if f not in self._own)
        self._lengths = (*self._own, *self._others)

    def prompt(self, body: dict[str, Any]) -> str:
        shape = self.shape
        if shape is None:
            return "\n".join(
                text
                for text in (_chat_prompt(body), _completion_prompt(body), _input_prompt(body))
                if text
            )
        if shape == "chat":
            return _chat_prompt(body)
        if shape == "completions":
            return _completion_prompt(body)
        return _input_prompt(body)

    def output(self, body: dict[str, Any]) -> int | None:
        """The output the server may generate: the largest length field present, or None (the
        route's default, watched) when the shape's own field is absent. 0 is absent: vLLM
        reads ``max_completion_tokens or max_tokens``, and falls back to its default."""
        own = 0
        get = body.get
        for key in self._own:
            value = get(key)
            if value is not None and (length := _length(value)) and length > own:
                own = length
        if not own:
            return None
        for key in self._others:
            value = get(key)
            if value is not None and (length := _length(value)) and length > own:
                own = length
        return own

    def ask(self, body: dict[str, Any]) -> Ask:
        shape = self.shape
        choices = max(_whole(body.get("n")) or 1, _whole(body.get("best_of")) or 1)
        output = self.output(body)
        if shape == "chat":
            return Ask(_chat_tokens(body), output, choices)
        if shape == "responses":
            return Ask(_input_tokens(body), output, choices)
        prompt, batch = _completion_tokens(body)
        if shape == "completions":
            return Ask(prompt, output, choices * batch)
        # no shape: whatever any server may read of it
        return Ask(_chat_tokens(body) + _input_tokens(body) + prompt, output, choices * batch)

    def cap(self, body: dict[str, Any], max_tokens: int) -> bool:
        changed = False
        present = False
        for key in self._lengths:
            if key not in body:
                continue
            if key == "min_tokens":  # a floor: lowered to the cap, never raised
                value = _length(body[key])
                if value is not None and value > max_tokens:
                    body[key] = max_tokens
                    changed = True
                continue
            present = present or key in self._own
            value = _whole(body[key])
            if not value or value > max_tokens:  # a malformed value (or 0) gets the cap too
                body[key] = max_tokens
                changed = True
        if not present:  # the shape's own field: the one its server is sure to honour
            for key in self._own if self.shape is None else self._own[:1]:
                body[key] = max_tokens
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


#: ``inspect: openai`` on a path that names no shape: conservative.
OPENAI: Meter = OpenAIMeter()
CHAT, COMPLETIONS, RESPONSES = (OpenAIMeter(shape) for shape in SHAPES)
METERS: dict[str, Meter] = {"openai.chat": CHAT, "openai.completions": COMPLETIONS}
METERS["openai.responses"] = RESPONSES


def meter_for_path(path: str) -> Meter:
    """``inspect: openai``: the shape the request's path names (its ending, as OpenAI and vLLM
    route), else the conservative meter. Three string compares: nothing to cache."""
    if path.endswith("/completions"):
        return CHAT if path.endswith("/chat/completions") else COMPLETIONS
    if path.endswith("/responses"):
        return RESPONSES
    return OPENAI


METER_METHODS = ("prompt", "ask", "cap", "strip", "usage", "streamed")
