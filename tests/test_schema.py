"""`guardrail schema` documents every key: editors show each description on hover.

The walk follows whatever the schema holds (properties, $refs into $defs, dict values, array
items, anyOf branches), so a key added later without a docstring fails here by its path. What
yaml-language-server itself shows on hover was checked by hand (the README says how to attach it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from guardrail.errors import PolicyError
from guardrail.policy import Policy
from guardrail.policy_types import Duration, KeyHash, MeterRef, RateValue, ReferencedSecret, Size

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


def nodes(node: Any, key: bool = False) -> list[tuple[Schema, bool]]:
    """Every schema in ``node``, each with whether it is a key's (a value of ``properties``)."""
    if isinstance(node, list):
        return [pair for item in node for pair in nodes(item)]
    if not isinstance(node, Mapping):
        return []
    found = [(node, key)]
    for word, value in node.items():
        if word in ("properties", "$defs"):
            for schema in value.values():
                found += nodes(schema, key=word == "properties")
        elif word not in ("default", "const", "enum", "examples"):  # data, not schemas
            found += nodes(value)
    return found


def test_only_keys_speak_on_hover() -> None:
    # An editor's hover shows the first description among the schemas a value matches, and
    # joins anyOf titles with "||": a type's description or a title would hide the key's words.
    schema = Policy.json_schema()
    everything = nodes(schema)[1:]  # [0]: the document, described as a whole
    assert [node for node, key in everything if "description" in node and not key] == []
    assert [node for node, _ in everything if "title" in node] == []
    assert [node for node, _ in everything if len(node.get("anyOf", ())) > 2] == []
    text = json.dumps(schema)
    assert "\\n" not in text  # docstrings are unfolded: the editor wraps them
    assert schema["properties"]["mode"]["description"].startswith("enforce: refuse")


#: A piece of each string type's pattern, and the word its key's description must use.
FORMATS = {"duration": "(ms|s|m|h|d)", "rate": "(/|[Pp][Ee][Rr])", "size": "[A-Za-z]*"}


@pytest.mark.parametrize("word", FORMATS)
def test_a_key_names_its_value_s_format(word: str) -> None:
    # A type's description is gone from the schema (see above), so the key says the format.
    schema = Policy.json_schema()
    typed = {
        f"{name}.{key}": prop["description"]
        for name, model in [("Policy", schema), *schema["$defs"].items()]
        for key, prop in model.get("properties", {}).items()
        if any(FORMATS[word] in node.get("pattern", "") for node, _ in nodes(prop))
    }
    assert len(typed) >= 2  # the walk did find keys of this type
    assert {key: text for key, text in typed.items() if word not in text} == {}


def test_an_editor_says_what_guardrail_check_says_of_a_value_off_its_pattern() -> None:
    everything = nodes(Policy.json_schema())
    patterned = [node for node, _ in everything if "pattern" in node]
    assert len(patterned) >= 4  # durations, rates, sizes, meters
    assert [node for node in patterned if not node.get("patternErrorMessage")] == []
    # JSON Schema patterns are ECMA-262 regexes: Python's inline flags would not compile there.
    assert [node for node in patterned if re.search(r"\(\?[a-zA-Z]+\)", node["pattern"])] == []
    with pytest.raises(PolicyError) as refused:
        Policy.from_string("version: 1\nrisk: {half_life: 6 hours}\n")
    said = {node["patternErrorMessage"] for node in patterned}
    assert refused.value.issues[0].expected in said


# An editor that underlined a value guardrail accepts would teach people to ignore it.
SAMPLES = [
    (Duration, ["500ms", "30s", "15m", "6h", "7d", "1.5h", " 10 s ", "90"], ["6 hours", "soon"]),
    (RateValue, ["60/minute", "10 per second", "60/Minute", "5 PER 2 hours"], ["lots"]),
    (Size, ["256KB", "256KiB", "1.5MB", "262144"], ["a lot"]),
    (MeterRef, ["openai", "openai.chat", "examples.tgi_meter:TGI"], ["openai.embeddings"]),
    (KeyHash, ["k:" + "0123456789abcdef" * 2], ["sk-live-0123456789", "k:" + "AB" * 16]),
    (ReferencedSecret, ["env:HCAPTCHA_SECRET", "file:/run/secrets/hcaptcha"], ["0x00", "env:1"]),
]


@pytest.mark.parametrize(
    ("kind", "accepted", "refused"),
    SAMPLES,
    ids=["duration", "rate", "size", "meter", "key_hash", "referenced_secret"],
)
def test_a_pattern_accepts_what_guardrail_accepts(
    kind: Any, accepted: list[str], refused: list[str]
) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(kind)
    schemas = [node for node, _ in nodes(adapter.json_schema())]
    patterns = [node["pattern"] for node in schemas if "pattern" in node]
    enums = [value for node in schemas for value in node.get("enum", ())]
    assert patterns

    def editor_accepts(value: str) -> bool:
        return value in enums or any(re.search(pattern, value) for pattern in patterns)

    for value in accepted:
        adapter.validate_python(value)
        assert editor_accepts(value), value
    for value in refused:
        with pytest.raises(ValidationError):
            adapter.validate_python(value)
        assert not editor_accepts(value), value
