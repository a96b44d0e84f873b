"""YAML with line numbers: load a policy document and turn every problem into a located PolicyIssue.

PyYAML forgets where values came from and silently keeps the last of two duplicate keys, so the
document is composed into a node tree first: that tree gives the line of every key path and the
duplicates, then the same tree is constructed into plain data for pydantic.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from guardrail.errors import PolicyIssue

KeyPath = tuple[str | int, ...]

# The error type of guardrail's own validators: ctx["expected"] is the sentence to show, and
# ctx["at"] (optional) extends the error's location, so a model-level check can point at a key.
GUARDRAIL_ERROR = "guardrail"


def render_path(path: KeyPath) -> str:
    """``("routes", 1, "limits", 0, "rate")`` -> ``routes[1].limits[0].rate``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@dataclass(frozen=True, slots=True)
class Document:
    """A loaded YAML document: its data, the line of each key path, and problems found so far."""

    source: str
    data: Any
    lines: Mapping[KeyPath, int]
    issues: tuple[PolicyIssue, ...]

    def line_of(self, path: KeyPath) -> int | None:
        # A missing key has no line of its own: point at the closest enclosing key that exists.
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def issue(self, path: KeyPath, value: object, expected: str) -> PolicyIssue:
        return PolicyIssue(self.source, self.line_of(path), render_path(path), value, expected)

    def issues_from(self, error: ValidationError, root: type[BaseModel]) -> list[PolicyIssue]:
        """One issue per pydantic error, located and described for a human."""
        issues = []
        for detail in error.errors():
            ctx = detail.get("ctx") or {}
            path: KeyPath = tuple(detail["loc"]) + tuple(ctx.get("at", ()))
            value = detail["input"]
            if detail["type"] == "extra_forbidden":
                value = path[-1]
            elif detail["type"] == "missing":
                value = None
            elif ctx.get("at"):
                value = value.get(ctx["at"][-1]) if isinstance(value, Mapping) else value
            issues.append(self.issue(path, value, describe(detail, root)))
        return issues


def load(text: str, source: str) -> Document:
    """Parse ``text``; YAML errors and duplicate keys come back as issues, never as exceptions."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        return Document(source, None, {}, (_yaml_issue(exc, text, source),))
    finally:
        loader.dispose()
    lines: dict[KeyPath, int] = {}
    duplicates: list[PolicyIssue] = []
    if node is not None:
        _walk(node, (), lines, duplicates, source, set())
    return Document(source, data, lines, tuple(duplicates))


def _yaml_issue(exc: yaml.YAMLError, text: str, source: str) -> PolicyIssue:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark.line + 1 != line:
        context += f" started on line {context_mark.line + 1}"
    found = text.splitlines()[line - 1].strip() if line and line <= len(text.splitlines()) else ""
    reason = f"{context}, {problem}" if context else problem
    return PolicyIssue(source, line, "", found, f"valid YAML ({reason})")


def _walk(
    node: yaml.Node,
    path: KeyPath,
    lines: dict[KeyPath, int],
    duplicates: list[PolicyIssue],
    source: str,
    active: set[int],
) -> None:
    if id(node) in active:  # a recursive alias: the data is cyclic, stop here
        return
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key, line = str(key_node.value), key_node.start_mark.line + 1
            if key in seen:
                expected = f"each key once in a mapping; {key!r} is already set on line {seen[key]}"
                duplicates.append(
                    PolicyIssue(source, line, render_path((*path, key)), key, expected)
                )
            seen[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, duplicates, source, active)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), lines, duplicates, source, active)
    active.discard(id(node))


_KIND = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "model_type": "a mapping of keys to values",
    "model_attributes_type": "a mapping of keys to values",
    "dict_type": "a mapping of keys to values",
    "tuple_type": "a list",
    "list_type": "a list",
    "set_type": "a list",
    "frozen_set_type": "a list",
    "iterable_type": "a list",
    "missing": "a value: this key is required",
}

_BOUND = {
    "greater_than": "a number greater than {gt}",
    "greater_than_equal": "a number of at least {ge}",
    "less_than": "a number less than {lt}",
    "less_than_equal": "a number of at most {le}",
    "too_short": "at least {min_length} item(s)",
    "string_too_short": "a non-empty string",
    "string_pattern_mismatch": "a string matching {pattern}",
}


def describe(detail: ErrorDetails, root: type[BaseModel]) -> str:
    """What was expected where ``detail`` failed, as a sentence (no pydantic jargon)."""
    kind, ctx, loc = detail["type"], detail.get("ctx") or {}, tuple(detail["loc"])
    if kind == GUARDRAIL_ERROR:
        return str(ctx["expected"])  # our own validators wrote the sentence
    if kind == "extra_forbidden":
        known = _known_keys(_type_at(root, loc[:-1]))
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"not a known key{hint}; known keys here: {', '.join(known)}"
    if kind in ("literal_error", "enum"):
        choices = _literal_choices(_type_at(root, loc))
        return f"one of: {', '.join(choices)}" if choices else f"one of: {ctx.get('expected')}"
    if kind in _BOUND:
        return _BOUND[kind].format(**{key: _number(value) for key, value in ctx.items()})
    return _KIND.get(kind, detail["msg"])


def _number(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _type_at(root: type[BaseModel], loc: KeyPath) -> Any:
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        origin = get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(part, str):
            field = current.model_fields.get(part)
            if field is None:
                return None
            current = field.annotation
        elif origin in (tuple, list, frozenset, set):
            current = get_args(current)[0]
        elif origin is dict:
            current = get_args(current)[1]
        else:
            return None
    return _unwrap(current)


def _known_keys(model: Any) -> list[str]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _literal_choices(annotation: Any) -> list[str]:
    if get_origin(annotation) is Literal:
        return [str(choice) for choice in get_args(annotation)]
    return []
