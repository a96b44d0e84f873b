"""Served outputs per account, and the "leaked datasets" made of them, for provenance trials.

An output is a model-like answer of about 1 KB: an opener, the question restated, paragraphs
of explanation drawn from a grammar over ~1,000 content words, sometimes a list, a closer.
Two answers to the same question share its wording and the model's habits, not their
sentences, as sampled model outputs do. Campaign accounts send templated reasoning prompts
(``extraction``), and the model answers a template in a fixed scaffold (its step headings,
its "Final answer:" line), so siblings of one campaign share that boilerplate and the
restated question kinds: a leak of one account has to be told from its siblings by the
text, not by the template.

``perturb`` is what happens to a leaked output before it turns up: cut to 60%, reformatted
(markdown, whitespace, numbering), a fifth of the words replaced.
"""

from __future__ import annotations

import random
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass

from guardrail.simulate import extraction, prompts
from guardrail.simulate.traffic import account_rng, identity

# fmt: off
_ADJ = ("simple", "careful", "common", "useful", "small", "large", "quick", "slow", "basic",
        "main", "key", "extra", "rough", "exact", "clear", "hidden", "obvious", "typical",
        "cheap", "safe", "risky", "steady", "fresh", "early", "late", "final", "first",
        "second", "overall", "practical", "specific", "general", "gentle", "strong", "weak",
        "reliable", "flexible", "modest", "fair", "whole", "partial", "direct", "indirect",
        "local", "short", "long", "light", "heavy", "better", "worse", "similar", "different")
_VERB = ("changes", "affects", "explains", "covers", "reduces", "raises", "keeps", "needs",
         "shows", "uses", "adds", "removes", "checks", "limits", "helps", "supports", "moves",
         "turns", "brings", "builds", "balances", "matches", "follows", "sets", "shapes",
         "tracks", "splits", "joins", "holds", "drives", "slows", "speeds up", "clears",
         "protects", "replaces", "measures", "compares", "describes", "requires", "depends on")
_ADV = ("usually", "often", "rarely", "mostly", "clearly", "roughly", "quickly", "slowly",
        "easily", "carefully", "simply", "mainly", "partly", "directly", "naturally")
_CONNECT = ("In practice,", "As a rule,", "On the other hand,", "For example,", "In short,",
            "Put differently,", "That said,", "Because of this,", "In most cases,", "Here,",
            "At this point,", "Similarly,", "By contrast,", "Once that is done,", "Still,", "")
_ABSTRACT = ("approach", "result", "method", "option", "step", "detail", "factor", "cost",
             "effect", "reason", "pattern", "rule", "value", "change", "balance", "process",
             "answer", "idea", "problem", "question", "choice", "plan", "risk", "benefit",
             "estimate", "condition", "limit", "amount", "rate", "total", "part", "case")
_OPENERS = ("Great question!", "Sure, here is a clear answer.", "Happy to help with this.",
            "Here is how I would think about it.", "Let me break this down.",
            "Good question, and a common one.", "There are a few parts to this.", "")
_CLOSERS = ("I hope this helps!", "Let me know if you want more detail on any step.",
            "Feel free to ask a follow-up question.", "Happy to go deeper on any of these.", "")
_RESTATE = ("You are asking about", "The question is about", "To restate the question:",
            "So the task is this:", "In other words, you want to know about")
# The model's habitual shape of an answer to each campaign template (extraction.TEMPLATES_A).
_SCAFFOLDS = (
    ("Let's solve this step by step.", ("**Step 1: Understand the problem.**",
     "**Step 2: Set up the calculation.**", "**Step 3: Work it out.**",
     "**Step 4: Check the result.**"), "**Final answer:**"),
    ("As your tutor, I will write out every intermediate step.", ("First, what is given.",
     "Next, what we need to find.", "Then, the method we use.", "Finally, the computation."),
     "The final answer is"),
    ("Here is my reasoning in full detail.", ("## Reasoning", "## Intermediate steps",
     "## Verification"), "So the answer is"),
    ("I'll work through this carefully and show my whole chain of thought.", (
     "Thinking about the setup:", "Working through the numbers:", "Double-checking:"),
     "Therefore, the answer is"),
    ("Derivation:", ("1. Identify the quantities.", "2. Relate them.", "3. Solve.",
     "4. Verify."), "Answer:"),
)
# fmt: on
_NOUNS = tuple(
    sorted(
        {
            word
            for table in (prompts._V, prompts._MORE)
            for values in table.values()
            for value in values
            for word in re.findall(r"[a-z]{3,}", value.lower())
        }
        | set(_ABSTRACT)
    )
)
_NUMBER = re.compile(r"\d+")


def _sentence(rng: random.Random, numbers: list[str]) -> str:
    a, b, c = rng.choice(_NOUNS), rng.choice(_NOUNS), rng.choice(_NOUNS)
    kind = rng.randrange(5)
    if kind == 0:
        text = f"the {rng.choice(_ADJ)} {a} {rng.choice(_VERB)} the {b} of the {c}"
    elif kind == 1:
        text = (
            f"{rng.choice(_ADV)} the {a} {rng.choice(_VERB)} a {rng.choice(_ADJ)} {b}, "
            f"so the {c} {rng.choice(_VERB)} it"
        )
    elif kind == 2:
        text = f"a {rng.choice(_ADJ)} {a} and a {rng.choice(_ADJ)} {b} {rng.choice(_VERB)} {c}"
    elif kind == 3 and numbers:
        x, y = rng.choice(numbers), rng.choice(numbers)
        text = (
            f"taking {x} with {y} gives {int(x) * int(y) % 997}, which "
            f"{rng.choice(_VERB)} the {rng.choice(_ADJ)} {a}"
        )
    else:
        text = (
            f"if the {a} {rng.choice(_VERB)} the {b}, the {c} {rng.choice(_ADV)} "
            f"{rng.choice(_VERB)} the {rng.choice(_ABSTRACT)}"
        )
    lead = rng.choice(_CONNECT)
    return f"{lead} {text}." if lead else f"{text[0].upper()}{text[1:]}."


def _paragraph(rng: random.Random, numbers: list[str], sentences: int) -> str:
    return " ".join(_sentence(rng, numbers) for _ in range(sentences))


def answer(rng: random.Random, prompt: str, scaffold: int | None = None) -> str:
    """A model-like answer (~1 KB) to ``prompt``; ``scaffold`` is the campaign template the
    prompt was made from (its answers share that template's step headings)."""
    numbers = _NUMBER.findall(prompt)[:6]
    question = " ".join(prompt.split()[:16])
    parts = []
    if scaffold is None:
        parts.append(f"{rng.choice(_OPENERS)} {rng.choice(_RESTATE)} {question}".strip())
        for _ in range(rng.randint(3, 4)):
            parts.append(_paragraph(rng, numbers, rng.randint(2, 3)))
        if rng.random() < 0.5:
            parts.append("\n".join(f"- {_sentence(rng, numbers)}" for _ in range(3)))
        parts.append(rng.choice(_CLOSERS))
    else:
        opener, steps, final = _SCAFFOLDS[scaffold % len(_SCAFFOLDS)]
        parts.append(f"{opener} {rng.choice(_RESTATE)} {question}")
        for step in steps:
            parts.append(f"{step}\n{_paragraph(rng, numbers, rng.randint(2, 3))}")
        result = rng.choice(numbers) if numbers else rng.choice(_NOUNS)
        parts.append(f"{final} {result}")
    return "\n\n".join(part for part in parts if part)


@dataclass(frozen=True, slots=True)
class LeakAccount:
    """One subject of the provenance population."""

    population: str  # "benign", "campaign-a", "campaign-b", "campaign-c"
    index: int
    responses: int

    @property
    def subject(self) -> str:
        return identity(0, self.population, self.index)[0]


CAMPAIGNS = ("campaign-a", "campaign-b", "campaign-c")


def population(subjects: int, responses: int, per_campaign: int = 20) -> list[LeakAccount]:
    """``subjects`` accounts serving ``responses`` outputs in all: three campaigns of
    ``per_campaign`` accounts with 12% of the outputs (at least 400 each, enough to leak
    200), the rest benign accounts with 10 to ~2x the mean."""
    campaign_each = max(400, int(0.12 * responses / (len(CAMPAIGNS) * per_campaign)))
    out = [LeakAccount(name, i, campaign_each) for name in CAMPAIGNS for i in range(per_campaign)]
    benign = max(1, subjects - len(out))
    left = max(benign * 10, responses - campaign_each * len(out))
    rng = account_rng(0, "leak-population", 0)
    weights = [rng.uniform(0.1, 1.9) for _ in range(benign)]
    scale = left / sum(weights)
    out += [LeakAccount("benign", i, max(10, round(w * scale))) for i, w in enumerate(weights)]
    return out


def outputs(seed: int, account: LeakAccount, count: int | None = None) -> Iterator[str]:
    """What ``account`` was served, in order (the same on every call)."""
    rng = account_rng(seed, f"leak:{account.population}", account.index)
    for _ in range(account.responses if count is None else count):
        yield served(rng, account.population)


def served(rng: random.Random, kind: str) -> str:
    """One output as an account of population ``kind`` is served it. A campaign's prompt
    wraps the question in its template; the answer restates the question, not the wrapper,
    and takes the scaffold the model gives that template."""
    if kind == "campaign-a":
        scaffold = rng.randrange(len(extraction.TEMPLATES_A))
        return answer(rng, extraction.graded_question(rng), scaffold)
    if kind == "campaign-b":
        return answer(rng, extraction.graded_question(rng), rng.randrange(len(_SCAFFOLDS)))
    if kind == "campaign-c":
        if rng.random() < 0.4:
            return answer(rng, extraction.graded_question(rng), rng.randrange(2))
        return answer(rng, extraction.business_prompt(rng))
    return answer(rng, prompts.question(rng))


def perturb(text: str, rng: random.Random, keep: float = 0.6, substitute: float = 0.2) -> str:
    """``text`` as it turns up in a leaked dataset: cut to ``keep`` of its length, a share
    ``substitute`` of its words replaced, then reformatted one of three ways."""
    cut = text[: int(len(text) * keep)].rsplit(" ", 1)[0]
    pieces = re.split(r"(\s+)", cut)
    for i in range(0, len(pieces), 2):
        if pieces[i] and rng.random() < substitute:
            pieces[i] = rng.choice(_NOUNS)
    reworded = "".join(pieces)
    paragraphs = [p for p in re.split(r"\n\s*\n", reworded) if p.strip()]
    style = rng.randrange(3)
    if style == 0:  # markdown: a heading, bold phrases, bullets
        bolded = [re.sub(r"\b(\w+ \w+)\b", r"**\1**", p, count=1) for p in paragraphs]
        return "## Answer\n\n" + "\n".join(f"* {p}" for p in bolded)
    if style == 1:  # whitespace: one block, rewrapped at 60 columns
        return textwrap.fill(" ".join(paragraphs), 60)
    # numbering: every paragraph numbered, the markup taken out
    plain = [re.sub(r"[*#]+", "", p).strip() for p in paragraphs]
    return "\n".join(f"{n}. {p}" for n, p in enumerate(plain, 1))


def never_served(seed: int, count: int) -> Iterator[str]:
    """Outputs of the same model to accounts that are not in the index, in the same mix of
    kinds as those that are (templated ones included): the null of attribution."""
    rng = account_rng(seed, "leak:never-served", 0)
    for _ in range(count):
        yield served(rng, rng.choice(("benign", "benign", *CAMPAIGNS)))
