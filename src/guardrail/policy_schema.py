"""The policy's JSON Schema as editors read it (``guardrail schema``): each key is described by the
docstring under its field, and nothing else speaks when the key is hovered.

yaml-language-server's hover takes the first description among the schemas a value matches, and
joins the titles of an ``anyOf``'s branches with "||". A value type's own description (a
duration's format) or a model's docstring (written for Python readers) would hide the key's, and
pydantic's titles ("Inspect Timeout") only repeat the key's name. So descriptions stay on keys,
titles go, and docstrings wrapped at 100 columns are unfolded for the editor to wrap. An
``anyOf`` of three (a duration or null) is nested as two of two: the hover strips the last "||"
it joined, and leaves the others in the heading.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

DRAFT = "https://json-schema.org/draft/2020-12/schema"

#: Keywords whose values are data (a default, allowed values), never schemas to edit.
_DATA = frozenset({"default", "const", "enum", "examples"})


def editor_schema(model: type[BaseModel], description: str) -> dict[str, Any]:
    """``model``'s validation schema, with ``description`` for the document as a whole."""
    schema = _for_editors(model.model_json_schema(mode="validation"), key=False)
    return {"$schema": DRAFT, **schema, "description": description}


def _for_editors(node: Any, *, key: bool) -> Any:
    if isinstance(node, list):
        return [_for_editors(item, key=False) for item in node]
    if not isinstance(node, dict):
        return node
    edited: dict[str, Any] = {}
    for word, value in node.items():
        if word in _DATA:
            edited[word] = value
        elif word == "description":
            if key and isinstance(value, str):
                edited[word] = " ".join(value.split())
        elif word == "anyOf":
            edited[word] = _pairs([_for_editors(branch, key=False) for branch in value])
        elif word in ("properties", "$defs"):  # maps of names to schemas
            edited[word] = {
                name: _for_editors(schema, key=word == "properties")
                for name, schema in value.items()
            }
        elif word != "title":
            edited[word] = _for_editors(value, key=False)
    return edited


def _pairs(branches: list[Any]) -> list[Any]:
    """The same alternatives, two at each level: a | b | c as a | (b | c)."""
    if len(branches) <= 2:
        return branches
    return [branches[0], {"anyOf": _pairs(branches[1:])}]
