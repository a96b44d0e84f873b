"""`guardrail schema` documents every key: editors show each description on hover.

The walk follows whatever the schema holds (properties, $refs into $defs, dict values, array
items, anyOf branches), so a key added later without a docstring fails here by its path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from guardrail.policy import Policy

Schema = Mapping[str, Any]


def undescribed(schema: Schema) -> list[str]:
    """The key path (routes[].limits[].burst) of every property without a description."""
    defs: Mapping[str, Schema] = schema.get("$defs", {})
    missing: set[str] = set()
    reached: set[str] = set()

    def walk(node: Schema, path: str, through: frozenset[str]) -> None:
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.removeprefix("#/$defs/")
            reached.add(name)
            if name not in through:  # a recursive model is walked once per path
                walk(defs[name], path, through | {name})
        for key, prop in node.get("properties", {}).items():
            at = f"{path}.{key}" if path else key
            if not str(prop.get("description", "")).strip():
                missing.add(at)
            walk(prop, at, through)
        values = node.get("additionalProperties")
        if isinstance(values, Mapping):
            walk(values, f"{path}.<name>", through)
        items = node.get("items")
        if isinstance(items, Mapping):
            walk(items, f"{path}[]", through)
        for index, item in enumerate(node.get("prefixItems", ())):
            walk(item, f"{path}[{index}]", through)
        for branch in ("anyOf", "oneOf", "allOf"):
            for option in node.get(branch, ()):
                walk(option, path, through)

    walk(schema, "", frozenset())
    for name in sorted(set(defs) - reached):  # unreachable from the root, still in the schema
        walk(defs[name], f"$defs.{name}", frozenset({name}))
    return sorted(missing)


def properties(schema: Schema) -> int:
    own = len(schema.get("properties", {}))
    return own + sum(properties(model) for model in schema.get("$defs", {}).values())


def test_every_key_of_the_policy_schema_is_described() -> None:
    schema = Policy.json_schema()
    assert properties(schema) >= 85  # what 0.2 started with: the walk did reach them
    missing = undescribed(schema)
    assert not missing, "keys without a docstring under their field: " + ", ".join(missing)


def test_the_walk_names_every_undescribed_key_wherever_it_hides() -> None:
    leaf = {"type": "string"}
    said = {"type": "string", "description": "said"}
    schema = {
        "$defs": {
            "Limit": {"properties": {"rate": leaf, "per": said}},
            "Tier": {
                "properties": {
                    "limits": {"items": {"$ref": "#/$defs/Limit"}, "description": "d"},
                    "delay": {"anyOf": [leaf, {"type": "null"}]},
                }
            },
            "Node": {"properties": {"next": {"$ref": "#/$defs/Node"}}},
            "Orphan": {"properties": {"lost": leaf}},
        },
        "properties": {
            "tiers": {"additionalProperties": {"$ref": "#/$defs/Tier"}, "description": "d"},
            "pair": {"prefixItems": [{"properties": {"x": leaf}}], "description": "d"},
            "maybe": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}], "description": " "},
        },
    }
    assert undescribed(schema) == [
        "$defs.Orphan.lost",
        "maybe",
        "maybe.next",  # and no further: Node was walked on this path already
        "pair[0].x",
        "tiers.<name>.delay",
        "tiers.<name>.limits[].rate",
    ]


def test_descriptions_read_as_one_line_each() -> None:
    text = json.dumps(Policy.json_schema())
    schema = json.loads(text)
    assert schema["properties"]["mode"]["description"].startswith("enforce: refuse")
    assert "\\n" not in text  # docstrings are unfolded: the editor wraps them


def test_a_field_description_keeps_the_value_format_in_view() -> None:
    # A field's description replaces its type's ("a duration such as 500ms, …") at that key,
    # so a key whose type has a format says it in its own words.
    defs = Policy.json_schema()["$defs"]
    assert "10s" in defs["Route"]["properties"]["inspect_timeout"]["description"]
    assert "60/minute" in defs["Limit"]["properties"]["rate"]["description"]
    assert "256KB" in defs["Route"]["properties"]["inspect_max_bytes"]["description"]
