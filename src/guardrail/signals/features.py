"""What the risk engine reads from one request: its prompt sketch, extraction phrasing,
parameter shape and client fingerprint. Pure functions of the request."""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence

from starlette.types import Scope

from guardrail.inspection import OpenAIRequest

#: Phrasings that ask a model to expose its reasoning or its instructions. Each alone is
#: common among honest users ("think step by step" is a prompting habit); the signal is their
#: *share* of an identity's prompts, and it is worth a fifth of a mitigation at most.
REASONING_PATTERNS: tuple[str, ...] = (
    r"step[\s-]+by[\s-]+step",
    r"chain[\s-]+of[\s-]+thoughts?",
    r"show (?:me )?(?:all |your |the )?(?:full |complete |entire |detailed |whole )?"
    r"(?:reasoning|thinking|thought process|working|derivation|work)",
    r"(?:explain|walk me through|describe|detail) (?:your|the|each|every) "
    r"(?:reasoning|thought process|thinking|logic|intermediate steps?)",
    r"think (?:through|out loud|aloud|carefully|it through)",
    r"let'?s think",
    r"(?:internal|hidden|private|raw) (?:reasoning|monologue|thoughts?|scratchpad|chain)",
    r"reasoning (?:trace|steps|chain|process)",
    r"before (?:giving|stating|writing|you give) (?:the|your) (?:final )?answer",
    r"(?:reveal|print|repeat|output|show|tell me) (?:me )?(?:your |the )?"
    r"(?:system prompt|initial instructions|hidden instructions|instructions above)",
    r"ignore (?:all |any )?(?:previous|prior|above|earlier) instructions",
    r"<\s*(?:think|thinking|reasoning|scratchpad)\s*>",
)

#: Headers that SDKs add to describe themselves (OpenAI's Stainless SDKs, Anthropic's…).
_SDK_PREFIXES = (b"x-stainless-", b"x-sdk-", b"openai-", b"anthropic-")

#: max_tokens from which a fixed value on every request looks like harvesting long answers.
LARGE_MAX_TOKENS = 2048


def compile_patterns(patterns: Sequence[str | re.Pattern[str]]) -> re.Pattern[str] | None:
    """One case-insensitive alternation: a single search per prompt, in C."""
    if not patterns:
        return None
    sources = [p.pattern if isinstance(p, re.Pattern) else p for p in patterns]
    return re.compile("|".join(f"(?:{source})" for source in sources), re.IGNORECASE)


def asks_for_reasoning(pattern: re.Pattern[str] | None, prompt: str) -> bool:
    return pattern is not None and pattern.search(prompt) is not None


def shape(request: OpenAIRequest, last_max_tokens: int, last_temperature: float) -> bool:
    """Parameters that serve extraction rather than an answer: token probabilities, several
    samples per prompt, temperature sweeps, or the same large max_tokens every time."""
    body = request.body
    if body.get("logprobs") is True or body.get("top_logprobs"):
        return True
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        return True
    temperature = temperature_of(request)
    if temperature >= 0 and last_temperature >= 0 and temperature != last_temperature:
        return True
    max_tokens = request.max_tokens
    return (
        max_tokens is not None and max_tokens >= LARGE_MAX_TOKENS and max_tokens == last_max_tokens
    )


def temperature_of(request: OpenAIRequest) -> float:
    value = request.body.get("temperature")
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 10:
        return float(value)
    return -1.0


def fingerprint(scope: Scope) -> str | None:
    """A hash of what a client sends about itself: its user agent, the names of its headers
    (sorted: order varies with intermediaries) and the values of SDK headers. Identities that
    share one run the same client build, which is how a farm's accounts look alike."""
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers") or ()
    names = []
    described = []
    for name, value in headers:
        names.append(name)
        if name == b"user-agent" or name.startswith(_SDK_PREFIXES):
            described.append(name + b"=" + value)
    if not names:
        return None
    names.sort()
    described.sort()
    digest = zlib.crc32(b"\n".join(described), zlib.crc32(b",".join(names)))
    return f"f:{digest:08x}"
