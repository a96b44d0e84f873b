"""The policy's JSON Schema as editors read it (``guardrail schema``): each key is described by the
docstring under its field, and nothing else speaks when the key is hovered.

The docstrings are read from the models' source here, when a schema is asked for. pydantic's
``use_attribute_docstrings`` reads them as each model class is created, by walking the import's
frames: before Python 3.13 that was a seventh of ``import guardrail.policy`` in every process
(150-330 ms of 1.2-2 s, timed in-process on a busy 2-CPU box), for text only the schema uses.

yaml-language-server's hover takes the first description among the schemas a value matches, and
joins the titles of an ``anyOf``'s branches with "||". A value type's own description (a
duration's format) or a model's docstring (written for Python readers) would hide the key's, and
pydantic's titles ("Inspect Timeout") only repeat the key's name. So descriptions stay on keys,
titles go, and docstrings wrapped at 100 columns are unfolded for the editor to wrap. An
``anyOf`` of three (a duration or null) is nested as two of two: the hover strips the last "||"
it joined, and leaves the others in the heading.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import sys
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

DRAFT = "https://json-schema.org/draft/2020-12/schema"

#: Keywords whose values are data (a default, allowed values), never schemas to edit.
_DATA = frozenset({"default", "const", "enum", "examples"})


def editor_schema(model: type[BaseModel], description: str) -> dict[str, Any]:
    """``model``'s validation schema, with ``description`` for the document as a whole."""
    schema = model.model_json_schema(mode="validation", schema_generator=_KeyDocstrings)
    return {"$schema": DRAFT, **_for_editors(schema, key=False), "description": description}


class _KeyDocstrings(GenerateJsonSchema):
    """Describes each key without a ``Field(description=)`` by the docstring under its field."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trees: dict[str, ast.Module | None] = {}

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        json_schema = super().model_schema(schema)
        docstrings: dict[str, str] = {}
        for cls in reversed(schema["cls"].__mro__):  # a subclass's docstring wins
            docstrings.update(self._docstrings(cls))
        for key, prop in json_schema.get("properties", {}).items():
            if key in docstrings:
                prop.setdefault("description", docstrings[key])
        return json_schema

    def _docstrings(self, cls: type) -> dict[str, str]:
        """``name: type`` followed by a string, in the body of ``cls``."""
        return {
            field.target.id: inspect.cleandoc(doc.value.value)
            for field, doc in itertools.pairwise(self._body(cls))
            if isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(doc, ast.Expr)
            and isinstance(doc.value, ast.Constant)
            and isinstance(doc.value.value, str)
        }

    def _body(self, cls: type) -> list[ast.stmt]:
        if cls.__module__ not in self._trees:
            try:
                source = inspect.getsource(sys.modules[cls.__module__])
            except (KeyError, OSError, TypeError):  # no source: undescribed, and tests say so
                self._trees[cls.__module__] = None
            else:
                self._trees[cls.__module__] = ast.parse(source)
        tree = self._trees[cls.__module__]
        for node in tree.body if tree else ():
            if isinstance(node, ast.ClassDef) and node.name == cls.__qualname__:
                return node.body
        return []


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
