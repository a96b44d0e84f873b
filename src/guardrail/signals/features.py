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


#: Header names a fingerprint notes the presence of: what browsers, SDKs and HTTP libraries
#: send on their own.
_KNOWN = frozenset(
    (
        b"accept",
        b"accept-encoding",
        b"accept-language",
        b"authorization",
        b"cache-control",
        b"connection",
        b"content-type",
        b"cookie",
        b"dnt",
        b"origin",
        b"pragma",
        b"priority",
        b"referer",
        b"sec-ch-ua",
        b"sec-ch-ua-mobile",
        b"sec-ch-ua-platform",
        b"sec-fetch-dest",
        b"sec-fetch-mode",
        b"sec-fetch-site",
        b"te",
        b"upgrade-insecure-requests",
        b"user-agent",
        b"x-requested-with",
    )
)
#: Headers SDKs describe themselves with (OpenAI's Stainless SDKs, Anthropic's), values
#: included; not those that change between calls of one client (x-stainless-retry-count,
#: x-stainless-read-timeout), nor any made-up name under the same prefixes.
_SDK = frozenset(
    (
        b"x-stainless-lang",
        b"x-stainless-package-version",
        b"x-stainless-os",
        b"x-stainless-arch",
        b"x-stainless-runtime",
        b"x-stainless-runtime-version",
        b"x-stainless-async",
        b"openai-beta",
        b"anthropic-version",
        b"anthropic-beta",
    )
)

#: What ``ReasoningMatcher.anywhere`` looks for in a long prompt's middle: the built-in
#: patterns' phrasings that extraction prompts use (the simulator's campaigns, the literature's
#: "let's think step by step", "show your work", "<think>"), spaces made single.
MIDDLE_PHRASES: tuple[str, ...] = (
    "step by step",
    "step-by-step",
    "chain of thought",
    "chain-of-thought",
    "explain your reasoning",
    "show your reasoning",
    "your full reasoning",
    "your complete reasoning",
    "reasoning trace",
    "reasoning steps",
    "your thought process",
    "show your thinking",
    "show your work",
    "the intermediate steps",
    "think it through",
    "think through",
    "think carefully",
    "think aloud",
    "think out loud",
    "let's think",
    "lets think",
    "before giving the final answer",
    "hidden reasoning",
    "internal reasoning",
    "raw scratchpad",
    "internal monologue",
    "<think",
    "<reasoning",
    "your system prompt",
    "previous instructions",
    "instructions above",
)
#: Characters of a long prompt's middle that a policy's own patterns are searched over.
SEARCHED_MAX = 4096

#: max_tokens from which a fixed value on every request looks like harvesting long answers.
LARGE_MAX_TOKENS = 2048


#: Words one of which every built-in pattern needs: most prompts contain none, and a
#: substring test is ~100x cheaper than the alternation (measured: ~80 µs a 1 KB prompt).
_TRIGGERS = (
    "step",
    "chain",
    "show",
    "reason",
    "thought",
    "think",
    "logic",
    "intermediate",
    "monologue",
    "scratchpad",
    "before",
    "instructions",
    "system prompt",
)


class ReasoningMatcher:
    """Does a prompt ask for hidden reasoning? The built-in list, or the policy's patterns
    (which replace it and are searched without the trigger-word prefilter)."""

    __slots__ = ("_pattern", "_triggers")

    def __init__(self, patterns: Sequence[str | re.Pattern[str]] | None = None) -> None:
        custom = patterns is not None
        sources = [p.pattern if isinstance(p, re.Pattern) else p for p in patterns or ()]
        if not custom:
            sources = list(REASONING_PATTERNS)
        # Lowercasing the text once is several times cheaper than IGNORECASE in sre.
        flags = re.IGNORECASE if custom else 0
        self._pattern = (
            re.compile("|".join(f"(?:{source})" for source in sources), flags) if sources else None
        )
        self._triggers = () if custom else _TRIGGERS

    def __call__(self, cut: str) -> bool:
        """``cut``: the prompt's lowercased excerpt (``sketch.excerpt``)."""
        pattern = self._pattern
        if pattern is None or not self._triggered(cut):
            return False
        return pattern.search(cut) is not None

    def split(self, cut: str) -> tuple[bool, str]:
        """Does ``cut`` ask for reasoning, and ``cut`` with those requests cut out: what its
        template sketch is taken from. A habitual closing phrase ("Let's think step by step.")
        on otherwise unrelated questions would make them near-duplicates of each other; the
        request for reasoning is counted on its own (``reasoning_extraction``), and a template
        is the rest of the frame, its slots changing."""
        pattern = self._pattern
        if pattern is None or not self._triggered(cut):
            return False, cut
        rest, found = pattern.subn(" ", cut)
        return found > 0, rest

    def anywhere(self, text: str) -> bool:
        """Does ``text`` (lowercased: a long prompt's middle, ``sketch.middle``) ask for
        reasoning? Padding a prompt must not hide its instruction, but a pasted document
        must not cost a regex over every kilobyte: the built-in list is read here as
        MIDDLE_PHRASES, the phrasings of its patterns that distillation prompts use, looked for
        as substrings once runs of spaces are made one (~40 µs a KB). A policy's own
        patterns are searched as they are, over the first SEARCHED_MAX characters."""
        if not text or self._pattern is None:
            return False
        if not self._triggers:
            return self._pattern.search(text, 0, SEARCHED_MAX) is not None
        if not self._triggered(text):  # every phrase holds a trigger word: most text has none
            return False
        flat = " ".join(text.split())
        for phrase in MIDDLE_PHRASES:  # noqa: SIM110 (a loop, not any(): no generator)
            if phrase in flat:
                return True
        return False

    def _triggered(self, cut: str) -> bool:
        if not self._triggers:
            return True
        for trigger in self._triggers:  # noqa: SIM110 (a loop, not any(): no generator per prompt)
            if trigger in cut:
                return True
        return False


def shape(
    request: OpenAIRequest, temperature: float, last_max_tokens: int, last_temperature: float
) -> bool:
    """Parameters that serve extraction rather than an answer: token probabilities, several
    samples per prompt, temperature sweeps, or the same large max_tokens every time.
    ``temperature``: ``temperature_of(request)``, which the caller keeps too."""
    body = request.body
    if body.get("logprobs") is True or body.get("top_logprobs"):
        return True
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        return True
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
    """A hash of what a client sends about itself: its user agent, which of the well-known
    headers it sends (sorted: order varies with intermediaries) and the values of SDK headers.
    Identities that share one run the same client build, which is how a farm's accounts look
    alike. Unknown header names are left out, or a client could wear a new fingerprint per
    request by inventing one; so are values that change between calls of one client (an SDK's
    retry count)."""
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers") or ()
    parts = []
    for name, value in headers:
        if name in _KNOWN:
            parts.append(b"user-agent=" + value if name == b"user-agent" else name)
        elif name in _SDK:
            parts.append(name + b"=" + value)
    if not parts:
        return None
    parts.sort()
    digest = zlib.crc32(b"\n".join(parts))
    return f"f:{digest:08x}"
