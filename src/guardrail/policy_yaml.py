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


def line_in(lines: Mapping[KeyPath, int], path: KeyPath) -> int | None:
    """The line of ``path``; a missing key has no line of its own: the closest enclosing key's."""
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


@dataclass(frozen=True, slots=True)
class Document:
    """A loaded YAML document: its data, the line of each key path, and problems found so far."""

    source: str
    data: Any
    lines: Mapping[KeyPath, int]
    issues: tuple[PolicyIssue, ...]

    def line_of(self, path: KeyPath) -> int | None:
        return line_in(self.lines, path)

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
                value = _walk_to(value, ctx["at"])
            issues.append(self.issue(path, value, describe(detail, root)))
        return issues


def _walk_to(value: object, at: KeyPath) -> object:
    """The value at ``at`` below ``value`` (a model validator's input), None if absent."""
    for key in at:
        if isinstance(value, Mapping):
            value = value.get(key)
        elif isinstance(value, (list, tuple)) and isinstance(key, int) and key < len(value):
            value = value[key]
        else:
            return None
    return value


#: How deep a policy may nest. A real one is under ten levels; PyYAML composes (and pydantic
#: validates) recursively, so thousands of levels would end in a RecursionError, not an issue.
MAX_DEPTH = 50
#: How many values aliases (``*name``) may repeat in all. Aliases share nodes, so eight lines can
#: expand to millions of values ("billion laughs") that validation would then walk one by one.
MAX_ALIAS_VALUES = 10_000

_MERGE = "tag:yaml.org,2002:merge"
_TEXT = "tag:yaml.org,2002:str"


def load(text: str, source: str) -> Document:
    """Parse ``text``; YAML errors and duplicate keys come back as issues, never as exceptions."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        walk = _Walk(source, text, loader.alias_lines)
        if node is not None:
            walk.visit(node, ())
        if walk.refused or node is None:  # too deep, too big or cyclic: never construct it
            return Document(source, None, walk.lines, tuple(walk.issues))
        data = loader.construct_document(node)
    except _TooDeep as exc:
        return Document(source, None, {}, (_too_deep(source, text, exc.line),))
    except RecursionError:  # not expected past the limits above; an issue all the same
        return Document(source, None, {}, (_too_deep(source, text, None),))
    except yaml.YAMLError as exc:
        return Document(source, None, {}, (_yaml_issue(exc, text, source),))
    finally:
        loader.dispose()
    return Document(source, data, walk.lines, tuple(walk.issues))


class _TooDeep(Exception):
    def __init__(self, line: int | None) -> None:
        super().__init__(line)
        self.line = line


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing deep nesting as it composes and leaving out keys that are not
    text as it constructs (the walk reports them, so a list as a key hides no other issue)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0
        # (id of a sequence, index) -> line of an alias written there: the node it yields is
        # the anchored one, whose own line is that of the anchor.
        self.alias_lines: dict[tuple[int, int], int] = {}

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        if isinstance(event, yaml.AliasEvent):
            if parent is not None and isinstance(index, int) and line is not None:
                self.alias_lines[(id(parent), index)] = line
        elif self.depth > MAX_DEPTH:
            raise _TooDeep(line)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)  # resolves merge keys first, as SafeConstructor does
        node.value = [(key, value) for key, value in node.value if _is_text(key)]
        return super().construct_mapping(node, deep)


def _is_text(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _TEXT


class _Walk:
    """One pass over the composed node tree, before construction: the line of every key path,
    and the issues PyYAML would not report (duplicate keys, keys that are not text) or would
    only hit later as a crash or a stall (aliases that loop or repeat too much)."""

    def __init__(self, source: str, text: str, alias_lines: Mapping[tuple[int, int], int]):
        self.source, self.text, self.alias_lines = source, text, alias_lines
        self.lines: dict[KeyPath, int] = {}
        self.issues: list[PolicyIssue] = []
        self.refused = False  # an issue that makes the data unsafe to construct and validate
        self.visited: set[int] = set()
        self.active: set[int] = set()  # the nodes enclosing the current one
        self.measured: dict[int, tuple[int, int]] = {}
        self.repeated = 0  # values repeated by aliases so far

    def visit(self, node: yaml.Node, path: KeyPath, line: int | None = None) -> None:
        line = line or node.start_mark.line + 1
        if id(node) in self.active:
            self._refuse(
                path, line, "an alias outside the anchor it names: this value would contain itself"
            )
        elif id(node) in self.visited:
            # An alias: each node is walked once (its key paths got their lines the first
            # time), but what it repeats counts towards the limits.
            values, depth = self._measure(node)
            self.repeated += values
            if len(path) + depth - 1 > MAX_DEPTH:
                self._refuse(path, line, _TOO_DEEP + " once aliases are expanded")
            elif self.repeated > MAX_ALIAS_VALUES:
                self._refuse(
                    path,
                    line,
                    f"aliases repeating at most {MAX_ALIAS_VALUES} values "
                    f"in all; with this one they repeat {self.repeated}",
                )
        else:
            self.visited.add(id(node))
            self.active.add(id(node))
            if isinstance(node, yaml.MappingNode):
                self._mapping(node, path)
            elif isinstance(node, yaml.SequenceNode):
                for index, item in enumerate(node.value):
                    item_line = self.alias_lines.get((id(node), index), item.start_mark.line + 1)
                    self.lines[(*path, index)] = item_line
                    self.visit(item, (*path, index), item_line)
            self.active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> None:
        explicit: dict[str, int] = {}
        merged: list[tuple[yaml.Node, int]] = []
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE:
                merged.append((value_node, line))
                continue
            if not _is_text(key_node):
                written = self._written(key_node)
                self._issue((*path, written), line, written, _not_text_key(key_node, written))
                self.visit(value_node, (*path, written), line)
                continue
            key = str(key_node.value)
            if key in explicit:
                expected = (
                    f"each key once in a mapping; {key!r} is already set on line {explicit[key]}"
                )
                self._issue((*path, key), line, key, expected)
            explicit[key] = line
        # Merged keys (``<<: *anchor``) are defaults that explicit keys override, as the YAML
        # merge spec says: not duplicates. Their values are found at the ``<<`` line.
        for value_node, line in merged:
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in sources:
                self.visit(source, path, line)
                for key in _keys_of(source, set()):
                    if key not in explicit:
                        self.lines.setdefault((*path, key), line)
        for key_node, value_node in node.value:
            if _is_text(key_node):
                key, line = str(key_node.value), key_node.start_mark.line + 1
                self.lines[(*path, key)] = line  # of the last one, whose value PyYAML keeps
                self.visit(value_node, (*path, key), line)

    def _measure(self, node: yaml.Node) -> tuple[int, int]:
        """(values, depth) of ``node`` once its aliases are expanded; each node counted once."""
        if id(node) in self.measured:
            return self.measured[id(node)]
        if id(node) in self.active:  # a cycle, refused by visit()
            return 1, 1
        self.active.add(id(node))
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        values, depth = 1, 1
        for child in children:
            child_values, child_depth = self._measure(child)
            values, depth = values + child_values, max(depth, child_depth + 1)
        self.active.discard(id(node))
        self.measured[id(node)] = values, depth
        return values, depth

    def _written(self, node: yaml.Node) -> str:
        return _shorten(self.text[node.start_mark.index : node.end_mark.index])

    def _issue(self, path: KeyPath, line: int, value: object, expected: str) -> None:
        self.issues.append(PolicyIssue(self.source, line, render_path(path), value, expected))

    def _refuse(self, path: KeyPath, line: int, expected: str) -> None:
        # The first such problem is enough: the document is not constructed, and every alias
        # past the limit would repeat the same issue.
        if not self.refused:
            self._issue(path, line, _line_text(self.text, line), expected)
        self.refused = True


def _not_text_key(node: yaml.Node, written: str) -> str:
    if isinstance(node, yaml.ScalarNode):
        return f"a key that is text: quote it ('{written}') to use it as one"
    return "a key that is text, not a list or a mapping"


def _keys_of(node: yaml.Node, seen: set[int]) -> list[str]:
    """The text keys a merge of ``node`` brings, its own merges included."""
    if not isinstance(node, yaml.MappingNode) or id(node) in seen:
        return []
    seen.add(id(node))
    keys = []
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE:
            nested = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            keys += [key for source in nested for key in _keys_of(source, seen)]
        elif _is_text(key_node):
            keys.append(str(key_node.value))
    return keys


_TOO_DEEP = f"a policy nested at most {MAX_DEPTH} levels deep"


def _too_deep(source: str, text: str, line: int | None) -> PolicyIssue:
    return PolicyIssue(source, line, "", _line_text(text, line), _TOO_DEEP)


def _line_text(text: str, line: int | None) -> str:
    lines = text.splitlines()
    return _shorten(lines[line - 1].strip()) if line and line <= len(lines) else ""


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _yaml_issue(exc: yaml.YAMLError, text: str, source: str) -> PolicyIssue:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark.line + 1 != line:
        context += f" started on line {context_mark.line + 1}"
    reason = f"{context}, {problem}" if context else problem
    return PolicyIssue(source, line, "", _line_text(text, line), f"valid YAML ({reason})")


_KIND = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number (not .nan or .inf)",
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
    # yes/no/on/off are booleans in YAML 1.1 (PyYAML's YAML): `mode: on` is not the word "on".
    quote = " (unquoted, YAML reads it as true or false: quote the word)"
    hint = quote if isinstance(detail["input"], bool) else ""
    if kind in ("literal_error", "enum"):
        choices = _literal_choices(_type_at(root, loc))
        if choices:
            return f"one of: {', '.join(choices)}" + hint
        return f"one of: {ctx.get('expected')}"
    if kind in _BOUND:
        return _BOUND[kind].format(**{key: _number(value) for key, value in ctx.items()})
    if kind == "string_type":
        return _KIND[kind] + hint
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
