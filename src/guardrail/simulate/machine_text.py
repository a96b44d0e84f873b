"""Seeded text that legitimate programs send: a coding agent's turns, CI suites, eval sets.

These are the benign look-alikes of a campaign. A coding tool sends one long system prompt
shared by all its users and machine-made turns (tool output, code); CI re-sends a fixed
suite or one fixed instruction over varying documents; an eval harness loops over a fixed
prompt set, some of it asking for step-by-step reasoning as published benchmarks do.
"""

from __future__ import annotations

import random

from guardrail.simulate.extraction import graded_question
from guardrail.simulate.prompts import fill, question

CODING_SYSTEM = (
    "You are Forge, an autonomous software engineering agent working inside the user's "
    "repository. You can call tools: read_file(path), write_file(path, content), "
    "apply_patch(diff), run_shell(command, timeout), search(pattern, glob), list_dir(path). "
    "Call one tool at a time and wait for its result, which arrives as a <tool_result> block "
    "in the next user message. Never invent file contents: read before you edit. Keep "
    "changes minimal and focused on the task; do not reformat unrelated code. Preserve the "
    "project's style, naming and import order. Prefer the standard library to new "
    "dependencies, and never add a dependency without asking. Before finishing, run the "
    "project's tests and linters and fix what you broke. If a command fails, read the error "
    "carefully and try a different approach rather than repeating the same command. When the "
    "task is ambiguous, state your assumption in one sentence and proceed. Never print "
    "secrets, tokens or the contents of .env files; never push, tag or publish. Explain each "
    "change in one short sentence before the tool call that makes it. Use relative paths from "
    "the repository root. Large outputs are truncated to 4000 characters: narrow your search "
    "instead of paging through everything. Respect .gitignore. When you write tests, make "
    "them deterministic and fast; no network access, no sleeping. When editing configuration "
    "(CI, Docker, build files) double-check the syntax by running the relevant validator. If "
    "you are asked to explain code, quote the lines you refer to with their path and line "
    "numbers. At the end, reply with a summary of the change, the commands you ran and their "
    "results, and anything left undone. Format: plain text, code in fenced blocks with a "
    "language tag. You are running non-interactively; the user reads your transcript later, "
    "so be complete but brief. Current working directory is the repository root."
)

# fmt: off
_VERBS = ("load", "parse", "build", "fetch", "render", "validate", "merge", "resolve", "encode",
          "sync", "flush", "compute", "normalize", "apply", "collect", "schedule", "retry")
_NOUNS = ("config", "user", "order", "cache", "token", "session", "invoice", "report", "queue",
          "schema", "payload", "index", "route", "batch", "account", "widget", "event", "job")
_TYPES = ("str", "int", "dict[str, Any]", "list[str]", "bytes", "float", "Path", "None")
_LINES = (
    "if not {a}:\n        return {b}",
    "{a} = {b}.get('{c}', {n})",
    "for {c} in {a}:\n        {b}.append({c})",
    "logger.debug('{verb} %s', {a})",
    "{a} = await self.{verb}_{noun}({b})",
    "raise ValueError(f'bad {noun}: {{{a}!r}}')",
    "{a} = [x for x in {b} if x.{c}]",
    "with open({a}) as fh:\n        {b} = fh.read()",
    "{a} += {n}",
    "return {a}",
    "try:\n        {a} = int({b})\n    except ValueError:\n        {a} = {n}",
)
_INSTRUCTIONS = (
    "Fix the failing test in tests/test_{noun}.py.",
    "Add a --{verb} flag to the CLI that skips the {noun} step.",
    "Refactor {verb}_{noun} so it no longer reads the environment directly.",
    "Why does `make test` hang on the {noun} tests?",
    "Add type hints to {pkg}/{noun}.py and make mypy pass.",
    "The {noun} endpoint returns 500 when the {noun2} is missing. Make it return 400.",
    "Write a migration that adds a {noun}_id column to {noun2}s.",
    "Speed up {verb}_{noun}; it is the hot path in the profiler.",
    "Port {pkg}/{noun}.py from requests to httpx.",
    "Document the {noun} module and add an example to the README.",
)
_NUDGES = (
    "No, keep the old function signature, other callers use it.",
    "Also update the changelog.", "Looks good, continue.",
    "Run the whole suite, not just that file.",
    "Stop, that file is generated; edit the template instead.", "Use the existing helper in utils.",
    "Can you add a test for the empty case too?", "Don't touch the lockfile.",
)
# fmt: on


def _identifiers(rng: random.Random) -> dict[str, str]:
    verb, noun = rng.choice(_VERBS), rng.choice(_NOUNS)
    return {
        "verb": verb,
        "noun": noun,
        "noun2": rng.choice(_NOUNS),
        "a": f"{rng.choice(_NOUNS)}_{rng.choice(('map', 'list', 'id', 'raw', 'count', 'path'))}",
        "b": rng.choice(_NOUNS) + rng.choice(("s", "_data", "_cfg", "")),
        "c": rng.choice(("key", "item", "row", "name", "value", "entry")),
        "n": str(rng.randint(0, 500)),
    }


def code_block(rng: random.Random, pkg: str) -> str:
    """A few generated functions: what ``read_file`` returns."""
    out = []
    for _ in range(rng.randint(1, 3)):
        ids = _identifiers(rng)
        lines = [rng.choice(_LINES).format_map(_identifiers(rng)) for _ in range(rng.randint(3, 9))]
        args = ", ".join(
            f"{rng.choice(_NOUNS)}: {rng.choice(_TYPES)}" for _ in range(rng.randint(0, 3))
        )
        out.append(
            f"def {ids['verb']}_{ids['noun']}({args}) -> {rng.choice(_TYPES)}:\n    "
            + "\n    ".join(lines)
        )
    return f"# {pkg}/{rng.choice(_NOUNS)}.py\n" + "\n\n\n".join(out)


def _test_output(rng: random.Random, pkg: str) -> str:
    failed = rng.randint(0, 4)
    passed = rng.randint(5, 400)
    lines = [
        f"FAILED tests/test_{rng.choice(_NOUNS)}.py::test_{rng.choice(_VERBS)}_{rng.choice(_NOUNS)}"
        f" - AssertionError: assert {rng.randint(0, 99)} == {rng.randint(0, 99)}"
        for _ in range(failed)
    ]
    lines.append(f"==== {failed} failed, {passed} passed in {rng.uniform(0.5, 90):.2f}s ====")
    return "\n".join(lines)


def _traceback(rng: random.Random, pkg: str) -> str:
    frames = [
        f'  File "{pkg}/{rng.choice(_NOUNS)}.py", line {rng.randint(10, 900)}, in '
        f"{rng.choice(_VERBS)}_{rng.choice(_NOUNS)}"
        for _ in range(rng.randint(2, 6))
    ]
    error = rng.choice(("KeyError", "TypeError", "AttributeError", "ValueError", "TimeoutError"))
    return (
        "Traceback (most recent call last):\n"
        + "\n".join(frames)
        + (f"\n{error}: '{rng.choice(_NOUNS)}_{rng.choice(('id', 'name', 'ts'))}'")
    )


def _search(rng: random.Random, pkg: str) -> str:
    return "\n".join(
        f"{pkg}/{rng.choice(_NOUNS)}.py:{rng.randint(1, 800)}:    "
        f"{rng.choice(_VERBS)}_{rng.choice(_NOUNS)}({rng.choice(_NOUNS)})"
        for _ in range(rng.randint(2, 12))
    )


def _diff(rng: random.Random, pkg: str) -> str:
    ids = _identifiers(rng)
    start = rng.randint(1, 400)
    return (
        f"--- a/{pkg}/{ids['noun']}.py\n+++ b/{pkg}/{ids['noun']}.py\n"
        f"@@ -{start},4 +{start},5 @@\n-    {ids['a']} = {ids['b']}\n"
        f"+    {ids['a']} = {ids['b']} or {ids['n']}\n+    {ids['verb']}_{ids['noun']}({ids['a']})"
    )


_TOOLS = (
    ("read_file", code_block),
    ("run_shell", _test_output),
    ("run_shell", _traceback),
    ("search", _search),
    ("apply_patch", _diff),
)


def agent_task(rng: random.Random, pkg: str) -> str:
    """The first user turn of an agent task: what the developer asked for."""
    slots = _identifiers(rng)
    slots["pkg"] = pkg
    return rng.choice(_INSTRUCTIONS).format_map(slots)


def agent_turn(rng: random.Random, pkg: str) -> str:
    """A later user turn: a tool result (mostly) or the developer stepping in."""
    if rng.random() < 0.08:
        return rng.choice(_NUDGES)
    name, make = rng.choice(_TOOLS)
    return f'<tool_result name="{name}">\n{make(rng, pkg)}\n</tool_result>'


def agent_reply(rng: random.Random, prompt: str = "") -> str:
    """The model's side of an agent turn (whatever ``prompt`` was): a sentence and a tool call."""
    ids = _identifiers(rng)
    return (
        f"I'll {ids['verb']} the {ids['noun']} next.\n"
        f'{{"tool": "{rng.choice(("read_file", "run_shell", "search", "apply_patch"))}", '
        f'"args": {{"target": "{ids["noun"]}/{ids["a"]}"}}}}'
    )


def project_name(rng: random.Random) -> str:
    return f"{rng.choice(_NOUNS)}{rng.choice(('kit', 'hub', 'ly', 'd', 'core', 'svc'))}"


# --- CI and evaluation --------------------------------------------------------------------------

CI_INSTRUCTIONS = (
    "Summarize the following support ticket in three bullet points and classify its urgency "
    "as low, medium or high.\n\n",
    "Extract every date, amount and party named in the contract excerpt below as JSON.\n\n",
    "Translate the following release notes into plain English for customers.\n\n",
)
_TICKET = (
    "Customer {name} reports that {complaint} since {month}.",
    "They are on the {business} plan and have {n} seats.",
    "The last invoice was {money} and they were charged twice.",
    "Steps to reproduce: open the {noun} page, click export, wait {minutes} seconds.",
    "They tried clearing the cache and reinstalling the app on {tool}.",
    "Their {recipient} is asking for a refund of {money} by {month}.",
    "Error shown: {error}.",
    "Previous agent suggested {code_task}, which did not help.",
    "They mention they live in {city} and the issue started after moving.",
    "Account age {years} years, {percent}% of requests failing.",
)


def ci_document(rng: random.Random) -> str:
    """A long, varying document (ticket, contract, notes) that CI feeds a fixed instruction."""
    count = rng.randint(12, 40)  # roughly 1 to 3 KB
    sentences = [rng.choice(_TICKET).replace("{noun}", rng.choice(_NOUNS)) for _ in range(count)]
    return " ".join(fill(rng, sentence) for sentence in sentences)


def ci_prompt(rng: random.Random, instruction: str) -> str:
    """One CI request of the document kind: the fixed instruction, a fresh document."""
    return instruction + ci_document(rng)


def ci_suite(rng: random.Random, size: int) -> tuple[str, ...]:
    """A fixed regression suite: re-sent verbatim on every run."""
    return tuple(question(rng) for _ in range(size))


EVAL_COT = (
    "Answer the following question. Think step by step, then give the final answer after "
    "'####'.\n\nQuestion: {q}"
)


def eval_set(rng: random.Random, size: int, kind: str) -> tuple[str, ...]:
    """A published-benchmark-like prompt set: ``math`` (chain-of-thought, as GSM8K harnesses
    prompt), ``general`` or ``code``."""
    if kind == "math":
        return tuple(EVAL_COT.format(q=graded_question(rng)) for _ in range(size))
    if kind == "code":
        return tuple(
            fill(rng, "Write a {lang} function that {code_task}. Return only the code.")
            for _ in range(size)
        )
    return tuple(question(rng) for _ in range(size))
