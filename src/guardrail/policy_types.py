"""The value types of a policy file written as strings in YAML: rates, durations, sizes, networks,
regular expressions, header names, "module:function" and secret references.

Each is an ``Annotated`` type whose validator raises ``refuse(sentence)``: the user reads "a rate
in limits notation such as 60/minute", never pydantic internals, and the JSON Schema says string.
The schema describes keys, not types: the docstring of a key of one of these types names its
format (see policy_schema). A pattern's ``patternErrorMessage`` (a keyword of VS Code's and
yaml-language-server's) is what an editor says of a value that does not match: the sentence
``guardrail check`` says, not the regular expression.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Any, Literal

from limits import parse_many
from pydantic import (
    AfterValidator,
    ByteSize,
    PlainSerializer,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError
from starlette.types import Scope

from guardrail.policy_yaml import GUARDRAIL_ERROR, KeyPath
from guardrail.secrets import reference_kind


def refuse(expected: str, at: KeyPath = ()) -> PydanticCustomError:
    return PydanticCustomError(GUARDRAIL_ERROR, "{expected}", {"expected": expected, "at": at})


#: The largest count a policy may set (burst, cost, sizes, …): 2**53 is the last whole number a
#: double holds exactly, and Redis's Lua scripts count in doubles, so a larger burst would come
#: back from Redis rounded or as a garbage integer (-9223372036854775808).
MAX_COUNT = 2**53
_COUNT_EXPECTED = f"a whole number from 1 to 2**53 ({MAX_COUNT})"


def _count(value: object) -> int:
    # isinstance(True, int) holds: a bool is refused, not read as 1.
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_COUNT:
        return value
    raise refuse(_COUNT_EXPECTED)


@dataclass(frozen=True, slots=True)
class Rate:
    """``amount`` requests (or cost units) every ``seconds``; ``text`` is the rate as written."""

    amount: int
    seconds: float
    text: str

    @property
    def per_second(self) -> float:
        return self.amount / self.seconds


_RATE_EXPECTED = "a rate in limits notation such as 60/minute or 10 per second"


def _rate(value: object) -> Rate:
    if isinstance(value, Rate):
        return value
    if not isinstance(value, str):
        raise refuse(_RATE_EXPECTED)
    try:
        items = parse_many(value)
    except ValueError:
        raise refuse(_RATE_EXPECTED) from None
    if len(items) != 1:
        # limits.parse would silently keep the first of "10/second;100/minute"
        raise refuse(_RATE_EXPECTED + " (one rate per limit)")
    if items[0].amount < 1:
        raise refuse(_RATE_EXPECTED + ", above zero (exempt: true lifts limits)")
    if items[0].amount > MAX_COUNT:
        raise refuse(f"{_RATE_EXPECTED}, of at most 2**53 ({MAX_COUNT}) requests")
    return Rate(items[0].amount, float(items[0].get_expiry()), value)


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_DURATION_EXPECTED = "a duration such as 500ms, 30s, 15m, 6h or 7d, or a number of seconds"


def _duration(value: object) -> float:
    seconds = -1.0
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    if not (math.isfinite(seconds) and seconds >= 0):
        raise refuse(_DURATION_EXPECTED)
    return seconds


def parse_duration(text: str | float) -> float:
    """Seconds in "500ms", "30s", "15m", "6h", "7d" or a plain number; ValueError otherwise."""
    try:
        return _duration(text)
    except PydanticCustomError as exc:
        raise ValueError(exc.message()) from None


def _positive_duration(value: object) -> float:
    seconds = _duration(value)
    if seconds == 0:
        raise refuse(_DURATION_EXPECTED + ", above zero")
    return seconds


#: Bounds of ``risk.share_every``: below, a flush would cost more than the round trips it
#: saves; above, workers would see one another's evidence too late to matter.
SHARE_EVERY_MIN, SHARE_EVERY_MAX = 0.01, 10.0


def _share_every(value: object) -> float | Literal["request"]:
    if value == "request":
        return "request"
    try:
        seconds = _duration(value)
    except PydanticCustomError:
        seconds = -1.0
    if not SHARE_EVERY_MIN <= seconds <= SHARE_EVERY_MAX:
        raise refuse(
            "a duration from 10ms to 10s, such as 50ms (how often each worker shares its "
            "risk evidence through Redis), or request (read and write Redis on every request)"
        )
    return seconds


_BYTE_SIZE = TypeAdapter(ByteSize)
_SIZE_EXPECTED = (
    "a size such as 262144, 256KB (1000 bytes a KB) or 256KiB (1024), from 1 byte to 2**53"
)


def _size(value: object) -> int:
    try:
        size = -1 if isinstance(value, bool) else int(_BYTE_SIZE.validate_python(value))
    except ValidationError:
        size = -1
    if not 1 <= size <= MAX_COUNT:
        raise refuse(_SIZE_EXPECTED)
    return size


def _network(value: object) -> IPv4Network | IPv6Network:
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    expected = "an IP address or CIDR network such as 10.0.0.0/8, 127.0.0.1 or 2001:db8::/32"
    if not isinstance(value, str):
        raise refuse(expected)
    try:
        return ip_network(value.strip())  # a plain address is its own /32 or /128
    except ValueError:
        pass
    try:
        loose = ip_network(value.strip(), strict=False)
    except ValueError:
        raise refuse(expected) from None
    raise refuse(f"a network without host bits set: did you mean {loose}?")


def _pattern(value: object) -> re.Pattern[str]:
    if isinstance(value, re.Pattern):
        return value
    if not isinstance(value, str):
        raise refuse("a regular expression, as a string")
    try:
        return re.compile(value)
    except re.error as exc:
        raise refuse(f"a valid regular expression ({exc.msg} at position {exc.pos})") from None


def _cost(value: object) -> int | Literal["tokens"]:
    if value == "tokens":
        return "tokens"
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_COUNT:
        return value
    raise refuse("a whole number of units from 1 to 2**53, or tokens (the request's LLM tokens)")


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


_KEY_HASH = re.compile(r"k:[0-9a-f]{32}")


_KEY_HASH_EXPECTED = 'a keyed hash: "k:" and 32 lowercase hex digits (`guardrail hash-key`)'


def _key_hash(value: str) -> str:
    if not _KEY_HASH.fullmatch(value):
        raise refuse(_KEY_HASH_EXPECTED)
    return value


def _prefix(value: str) -> str:
    if not value.startswith("/") or value.endswith("/") or len(value) < 2:
        raise refuse("a path starting with / and not ending with /, such as /.guardrail")
    return value


#: A DNS name as siteverify reports it, or ``*.`` and one: each label 1-63 letters, digits, hyphens.
_HOSTNAME = re.compile(r"(\*\.)?(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*")


def _hostname(value: str) -> str:
    value = value.lower()
    if len(value) > 253 or not _HOSTNAME.fullmatch(value):
        raise refuse(
            "a host name as the browser shows it (api.example.com, or *.example.com for its "
            "subdomains): no scheme, port or path"
        )
    return value


def _site_name(value: str) -> str:
    # Shown on the challenge page (escaped there); a line of text, not a paragraph or markup.
    if not 0 < len(value) <= 80 or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise refuse("one line of text, 1 to 80 characters, such as Example Models API")
    return value


def _header(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise refuse("an HTTP header name such as authorization or x-account-id")
    return value.lower()


def _method(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise refuse("an HTTP method such as GET or POST")
    return value.upper()


def _import(ref: str, what: str) -> Any:
    """The object a 'module:attribute' reference names; refused (quoting why) if it cannot be
    imported."""
    module_name, _, attribute = ref.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for name in attribute.split("."):
            target = getattr(target, name)
    except Exception as exc:  # the user's module may fail in any way while importing
        raise refuse(f"an importable '{what}' ({type(exc).__name__}: {exc})") from None
    return target


def import_callable(ref: str) -> Callable[[Scope], str | None]:
    target = _import(ref, "module:function")
    if not callable(target):
        raise refuse(f"a callable 'module:function' ({ref} is a {type(target).__name__})")
    return target  # type: ignore[no-any-return]


_CALLABLE_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def _callable_ref(value: str) -> str:
    if not _CALLABLE_REF.fullmatch(value):
        raise refuse("a 'module:function' reference such as myapp.auth:account_of")
    import_callable(value)  # imported at load so a typo fails `guardrail check`, not a request
    return value


#: The OpenAI shapes a route may name; plain ``openai`` takes the shape from the path.
OPENAI_METERS = ("openai", "openai.chat", "openai.completions", "openai.responses")


_METER_EXPECTED = (
    "openai (the shape from the request's path), openai.chat, openai.completions, "
    "openai.responses, or a 'module:attribute' naming a meter (guardrail.metering.Meter) such "
    "as myapp.llm:METER"
)


def _meter_ref(value: str) -> str:
    if value in OPENAI_METERS:
        return value
    if not _CALLABLE_REF.fullmatch(value):
        raise refuse(_METER_EXPECTED)
    import_meter(value)  # imported at load so a typo fails `guardrail check`, not a request
    return value


def import_meter(ref: str) -> Any:
    """The object ``ref`` names, checked to have a meter's methods."""
    from guardrail.metering import METER_METHODS, METERS, OPENAI

    if ref == "openai":
        return OPENAI
    if ref in METERS:
        return METERS[ref]
    target = _import(ref, "module:attribute")
    missing = [m for m in METER_METHODS if not callable(getattr(target, m, None))]
    if missing:
        raise refuse(
            f"a meter: an object with the methods {', '.join(METER_METHODS)} ({ref} has no "
            f"{', '.join(missing)})"
        )
    return target


def _secret_ref(value: str) -> str:
    kind = reference_kind(value)
    name = value.partition(":")[2]
    if kind == "env" and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise refuse("env:NAME with NAME an environment variable name")
    if (kind == "file" and not name) or not value:
        raise refuse("env:NAME or file:PATH")
    return value


def _chain_key(value: str) -> str:
    return value if value == "secret" else _secret_ref(value)


_REFERENCED_EXPECTED = "env:NAME or file:PATH; this secret is never written into the policy"


def _referenced_secret(value: str) -> str:
    if reference_kind(_secret_ref(value)) == "literal":
        raise refuse(_REFERENCED_EXPECTED)
    return value


def _uri(schemes: tuple[str, ...], *, host_for: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in schemes or (scheme in host_for and not rest.strip("/")):
            raise refuse(f"a URI starting with one of: {', '.join(s + '://' for s in schemes)}")
        return value

    return check


_DURATION_SCHEMA = {
    "anyOf": [
        {
            "type": "string",
            "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$",
            "patternErrorMessage": _DURATION_EXPECTED,
        },
        {"type": "number", "minimum": 0},
    ]
}

RateValue = Annotated[
    Rate,
    PlainValidator(_rate),
    PlainSerializer(lambda rate: rate.text, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            # No (?i): JSON Schema patterns are ECMA-262, which has no inline flags.
            "pattern": r"^\s*\d+\s*(/|[Pp][Ee][Rr])\s*(\d+\s*)?[A-Za-z]+\s*$",
            "patternErrorMessage": _RATE_EXPECTED,
        }
    ),
]
Duration = Annotated[float, PlainValidator(_duration), WithJsonSchema(_DURATION_SCHEMA)]
PositiveDuration = Annotated[
    float, PlainValidator(_positive_duration), WithJsonSchema(_DURATION_SCHEMA)
]
ShareEvery = Annotated[
    float | Literal["request"],
    PlainValidator(_share_every),
    WithJsonSchema({"anyOf": [{"const": "request"}, _DURATION_SCHEMA]}),
]
Size = Annotated[
    int,
    PlainValidator(_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_COUNT},
                {
                    "type": "string",
                    "pattern": r"^\s*\d+(\.\d+)?\s*[A-Za-z]*\s*$",
                    "patternErrorMessage": _SIZE_EXPECTED,
                },
            ],
        }
    ),
]
Network = Annotated[
    IPv4Network | IPv6Network,
    PlainValidator(_network),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string"}),
]
Pattern = Annotated[
    re.Pattern[str],
    PlainValidator(_pattern),
    PlainSerializer(lambda pattern: pattern.pattern, return_type=str),
    WithJsonSchema({"type": "string", "format": "regex"}),
]
Cost = Annotated[
    int | Literal["tokens"],
    PlainValidator(_cost),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_COUNT}, {"const": "tokens"}]}
    ),
]
Count = Annotated[
    int,
    PlainValidator(_count),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_COUNT}),
]
Header = Annotated[str, AfterValidator(_header)]
Hostname = Annotated[str, AfterValidator(_hostname)]
SiteName = Annotated[str, AfterValidator(_site_name)]
Method = Annotated[str, AfterValidator(_method)]
# An editor underlines a raw API key pasted under allow.api_keys, and a literal secret, before
# either is saved.
KeyHash = Annotated[
    str,
    AfterValidator(_key_hash),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^k:[0-9a-f]{32}$",
            "patternErrorMessage": _KEY_HASH_EXPECTED,
        }
    ),
]
CallableRef = Annotated[str, AfterValidator(_callable_ref)]
MeterRef = Annotated[
    str,
    AfterValidator(_meter_ref),
    WithJsonSchema(
        {
            "anyOf": [
                {"enum": list(OPENAI_METERS)},
                {
                    "type": "string",
                    "pattern": r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
                    "patternErrorMessage": _METER_EXPECTED,
                },
            ],
        }
    ),
]
SecretRef = Annotated[str, AfterValidator(_secret_ref)]
ReferencedSecret = Annotated[
    str,
    AfterValidator(_referenced_secret),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:[\s\S]+)$",
            "patternErrorMessage": _REFERENCED_EXPECTED,
        }
    ),
]
ChainKey = Annotated[str, AfterValidator(_chain_key)]
PathPrefix = Annotated[str, AfterValidator(_prefix)]
HttpUrl = Annotated[str, AfterValidator(_uri(("https", "http"), host_for=("https", "http")))]
_STORAGE = ("memory", "redis", "rediss", "redis+cluster", "redis+sentinel")
StorageUri = Annotated[str, AfterValidator(_uri(_STORAGE, host_for=_STORAGE[1:]))]
_SINKS = ("file", "stdout", "redis", "rediss")
SinkUri = Annotated[str, AfterValidator(_uri(_SINKS, host_for=("file", "redis", "rediss")))]
