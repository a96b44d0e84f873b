"""The policy file as frozen pydantic models: YAML in, ``Policy`` out, all errors at once.

Value types written as strings (rates, durations, sizes, …) live in ``policy_types``; reading YAML
with line numbers and turning pydantic errors into ``PolicyIssue``s lives in ``policy_yaml``.
Checks that span fields are model validators that point at the offending key (``refuse(…, at=)``);
checks that span the whole document run on the raw data, so they are reported with field errors.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from starlette.types import Scope

from guardrail import policy_yaml
from guardrail.errors import PolicyError, PolicyIssue
from guardrail.policy_types import (
    CallableRef,
    ChainKey,
    Cost,
    Count,
    Duration,
    Header,
    Hostname,
    HttpUrl,
    KeyHash,
    MeterRef,
    Method,
    Network,
    PathPrefix,
    Pattern,
    PositiveDuration,
    Rate,
    RateValue,
    ReferencedSecret,
    SecretRef,
    ShareEvery,
    SinkUri,
    Size,
    StorageUri,
    import_callable,
    parse_duration,
    refuse,
)
from guardrail.secrets import DERIVE_FROM_SECRET, reference_kind
from guardrail.signals.catalog import NAMES as SIGNAL_NAMES

__all__ = ["Policy", "Rate", "check_files", "parse_duration"]

_KeyPath = policy_yaml.KeyPath

#: ``unmatched:`` values other than a route's name.
PASS, REFUSE = "pass", "refuse"


# -- the models -------------------------------------------------------------------------------


class _Model(BaseModel):
    # Numbers and booleans are declared strict=True field by field (strict mode for the whole
    # model would refuse YAML lists for tuples): YAML has typed them already, and lax mode would
    # read `burst: true` as 1 and `headers: "no"` as false. Floats still accept whole numbers.
    model_config = ConfigDict(frozen=True, extra="forbid")


class ApiKeyIdentity(_Model):
    header: Header = "authorization"


class AccountIdentity(_Model):
    """Exactly one of ``header`` or ``callable`` ("module:function" taking the ASGI scope)."""

    header: Header | None = None
    callable: CallableRef | None = None
    _resolve: Callable[[Scope], str | None] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _exactly_one(self) -> AccountIdentity:
        if (self.header is None) == (self.callable is None):
            raise refuse("exactly one of header or callable")
        if self.callable is not None:
            self._resolve = import_callable(self.callable)
        return self

    @property
    def resolve(self) -> Callable[[Scope], str | None] | None:
        """The imported ``callable``, or None when the account comes from a header."""
        return self._resolve


class ClientIp(_Model):
    trusted_proxies: tuple[Network, ...] = ()
    # The one forwarding header the trusted proxies write; the other is never read (a proxy
    # that appends to one passes the other through from the client, who could choose its IP).
    header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    # An IPv6 client is given a whole /64 (SLAAC, privacy addresses) and can rotate inside it:
    # per-ip limits and a keyless principal key on this many leading bits. IPv4: the address.
    ipv6_prefix: int = Field(default=64, ge=0, le=128, strict=True)


class SubnetConfig(_Model):
    ipv4_prefix: int = Field(default=24, ge=0, le=32, strict=True)
    ipv6_prefix: int = Field(default=48, ge=0, le=128, strict=True)


class Identity(_Model):
    api_key: ApiKeyIdentity | None = Field(default_factory=ApiKeyIdentity)
    account: AccountIdentity | None = None
    client_ip: ClientIp = Field(default_factory=ClientIp)
    subnet: SubnetConfig = Field(default_factory=SubnetConfig)


class Match(_Model):
    path: Pattern
    methods: Annotated[frozenset[Method], Field(min_length=1)] | None = None


class Limit(_Model):
    per: Literal["api_key", "account", "ip", "subnet", "global"]
    rate: RateValue
    burst: Count | None = None
    cost: Cost = 1

    @property
    def capacity(self) -> int:
        return self.burst if self.burst is not None else self.rate.amount

    @model_validator(mode="after")
    def _cost_fits(self) -> Limit:
        if isinstance(self.cost, int) and self.cost > self.capacity:
            raise refuse(
                f"a cost of at most {self.capacity}, the bucket's capacity (burst, else "
                "the rate's amount): a costlier request could never pass",
                at=("cost",),
            )
        return self


class Route(_Model):
    name: str = Field(min_length=1)
    match: Match
    exempt: bool = Field(default=False, strict=True)
    # openai: the OpenAI-compatible shape the request's path names (openai.chat,
    # openai.completions, openai.responses: one shape whatever the path); or
    # "module:attribute", a Meter for another protocol
    inspect: MeterRef | None = None
    inspect_max_bytes: Size = 262_144
    # How long the body may take to arrive (up to inspect_max_bytes): a client that stalls
    # mid-body gets a 408 instead of holding the connection and what it sent so far.
    inspect_timeout: PositiveDuration = 10.0
    headers: bool = Field(default=False, strict=True)
    # What a request that names no max_tokens is assumed to ask for: reserved against the
    # route's token budgets until its response says what it used.
    default_max_tokens: Count = 4096
    limits: tuple[Limit, ...] = ()

    @model_validator(mode="after")
    def _exempt_has_no_limits(self) -> Route:
        if self.exempt and self.limits:
            raise refuse(
                "no limits on an exempt route (exempt: true lifts them all)", at=("limits",)
            )
        return self

    @model_validator(mode="after")
    def _tokens_are_inspected(self) -> Route:
        for index, limit in enumerate(self.limits):
            if limit.cost == "tokens" and self.inspect is None:
                raise refuse(
                    "inspect: openai on the route: a cost: tokens limit counts the LLM tokens "
                    "that guardrail reads from the request and its response",
                    at=("limits", index, "cost"),
                )
        return self


class SignalConfig(_Model):
    weight: float = Field(default=1.0, ge=0, strict=True, allow_inf_nan=False)
    # reasoning_extraction only: the phrasings that count (case-insensitive regexes, searched
    # in the prompt's opening and closing characters); replaces the built-in list
    patterns: tuple[Pattern, ...] | None = None


class Risk(_Model):
    half_life: PositiveDuration = 6 * 3600.0
    # With Redis storage: how often each worker sends Redis the evidence it gathered and takes
    # what the others sent (backends/risk_shared.py); "request": on every request, in the
    # request's round trips (exact, and it costs most of a worker)
    share_every: ShareEvery = 0.05
    signals: dict[str, SignalConfig] = Field(default_factory=dict)


class Allow(_Model):
    accounts: tuple[str, ...] = ()
    api_keys: tuple[KeyHash, ...] = ()
    cidrs: tuple[Network, ...] = ()


class Threshold(_Model):
    score: float = Field(ge=0, le=100, strict=True, allow_inf_nan=False)
    action: Literal["throttle", "challenge", "block"]
    tier: str | None = None

    @model_validator(mode="after")
    def _throttle_names_tier(self) -> Threshold:
        if self.action == "throttle" and self.tier is None:
            raise refuse("the name of a tier: a throttle threshold needs one", at=("tier",))
        return self


class Hysteresis(_Model):
    margin: float = Field(default=10.0, ge=0, strict=True, allow_inf_nan=False)
    cooldown: Duration = 900.0


class Tier(_Model):
    limits: tuple[Limit, ...] = ()
    delay: Duration | None = None
    max_tokens: Count | None = None
    # What to take out of inspected bodies: logprobs (and top_logprobs), n (more than one
    # choice, and best_of): the richest material for distilling a model.
    strip: frozenset[Literal["logprobs", "n"]] = frozenset()
    stream_rate: RateValue | None = None
    header: bool = Field(default=False, strict=True)


class Captcha(_Model):
    sitekey: str = Field(min_length=1)
    secret: ReferencedSecret
    verify_url: HttpUrl
    timeout: PositiveDuration = 3.0
    on_error: Literal["pow", "open", "closed"] = "pow"
    # The hosts the challenge page is served on: a token siteverify says was solved anywhere
    # else is refused. Empty: the request's own Host header, which a non-browser client chooses
    # (a caution says so).
    hostnames: tuple[Hostname, ...] = ()


class HCaptcha(Captcha):
    verify_url: HttpUrl = "https://api.hcaptcha.com/siteverify"


class Turnstile(Captcha):
    verify_url: HttpUrl = "https://challenges.cloudflare.com/turnstile/v0/siteverify"


class Pow(_Model):
    difficulty: int = Field(default=18, ge=1, le=32, strict=True)


class Clearance(_Model):
    ttl: PositiveDuration = 1800.0
    max_requests: Count = 500
    bind: tuple[Literal["subject", "subnet", "user_agent", "ip"], ...] = (
        "subject",
        "subnet",
        "user_agent",
    )
    # Signing secrets, newest first: the first signs, every one verifies (rotation). Empty:
    # the policy's `secret`.
    secrets: tuple[ReferencedSecret, ...] = ()


VERIFY_LIMITS = (
    Limit.model_validate({"per": "ip", "rate": "10/minute", "burst": 10}),
    Limit.model_validate({"per": "subnet", "rate": "60/minute", "burst": 60}),
)


class Challenges(_Model):
    prefix: PathPrefix = "/.guardrail"
    order: tuple[Literal["hcaptcha", "turnstile", "pow"], ...] = Field(
        default=("pow",), min_length=1
    )
    hcaptcha: HCaptcha | None = None
    turnstile: Turnstile | None = None
    pow: Pow = Field(default_factory=Pow)
    clearance: Clearance = Field(default_factory=Clearance)
    # The verify endpoint's own buckets: answers are rare, a flood of them is not a person.
    verify_limits: tuple[Limit, ...] = Field(default_factory=lambda: VERIFY_LIMITS)

    @model_validator(mode="after")
    def _verify_limits_count_requests(self) -> Challenges:
        for index, limit in enumerate(self.verify_limits):
            if limit.cost == "tokens":
                raise refuse(
                    "a cost in requests: an answer to a challenge spends no tokens",
                    at=("verify_limits", index, "cost"),
                )
        return self

    @model_validator(mode="after")
    def _captchas_configured(self) -> Challenges:
        for name in ("hcaptcha", "turnstile"):
            if name in self.order and getattr(self, name) is None:
                raise refuse(
                    f"a {name} block (sitekey, secret) next to an order that lists {name}",
                    at=("order",),
                )
        return self


MAX_AGGREGATE = 3600.0


class Rotate(_Model):
    max_bytes: Size = 100_000_000
    keep: Count = 10


class AuditConfig(_Model):
    sink: SinkUri = "stdout://"
    rotate: Rotate = Field(default_factory=Rotate)
    sample_allowed: float = Field(default=0.0, ge=0, le=1, strict=True, allow_inf_nan=False)
    hash_chain: bool = Field(default=True, strict=True)
    # Keys the chain: the trail can then not be rewritten without this secret. None: SHA-256.
    chain_key: ChainKey | None = None
    # Repeated refusals of one subject within this interval: one record with a count; 0: off.
    aggregate: Duration = 10.0

    @field_validator("aggregate")
    @classmethod
    def _aggregate_reports_soon(cls, seconds: float) -> float:
        if seconds > MAX_AGGREGATE:  # the count is written when its interval closes
            raise refuse("a duration of at most 1h (10s is the default), or 0 to turn it off")
        return seconds

    @model_validator(mode="after")
    def _keyed_chain_is_a_chain(self) -> AuditConfig:
        if self.chain_key is not None and not self.hash_chain:
            raise refuse("true: audit.chain_key keys the hash chain", at=("hash_chain",))
        return self


#: The breaker probes at least this often: Redis is back in use within this of its recovery.
MAX_PROBE_EVERY = 60.0


class StorageBreaker(_Model):
    """Redis failing ``failures`` times in a row is skipped: on_storage_error applies at once,
    without waiting for a timeout, until a probe (one every ``probe_every``) passes."""

    failures: int = Field(default=3, ge=0, le=1000, strict=True)  # 0: no breaker
    probe_every: PositiveDuration = 0.25

    @field_validator("probe_every")
    @classmethod
    def _probes_soon(cls, seconds: float) -> float:
        if seconds > MAX_PROBE_EVERY:  # Redis stays unused this long after it is back
            raise refuse("a duration of at most 1m (250ms is the default)")
        return seconds


class Reload(_Model):
    """What makes a running guardrail read its policy file again (``guardrail.reload``)."""

    sighup: bool = Field(
        default=False,
        strict=True,
        description="reload the policy file when the serving process receives SIGHUP (send it "
        "to the workers: a supervisor such as uvicorn --workers restarts them on SIGHUP)",
    )
    watch: bool = Field(
        default=False,
        strict=True,
        description="reload the policy file when it changes on disk (needs the reload extra: "
        "pip install 'guardrail[reload]')",
    )


_WIDE_CHECKED = "guardrail_policy_wide_checked"


class Policy(_Model):
    """A guardrail policy. Load with ``Policy.from_yaml(path)`` or ``Policy.from_string(text)``."""

    version: Literal[1]
    mode: Literal["enforce", "observe"] = "enforce"
    storage: StorageUri = "memory://"
    on_storage_error: Literal["fail_open", "fail_closed"] = "fail_open"
    storage_breaker: StorageBreaker = Field(default_factory=StorageBreaker)
    max_subjects: Count = 1_000_000
    secret: SecretRef | None = None
    identity: Identity = Field(default_factory=Identity)
    routes: tuple[Route, ...] = ()
    # A request no route matches: pass (served unguarded, counted in the trail), refuse (404),
    # or the name of a route whose limits it takes (a default route).
    unmatched: str = Field(default=PASS, min_length=1)
    risk: Risk = Field(default_factory=Risk)
    allow: Allow = Field(default_factory=Allow)
    thresholds: tuple[Threshold, ...] = ()
    hysteresis: Hysteresis = Field(default_factory=Hysteresis)
    tiers: dict[str, Tier] = Field(default_factory=dict)
    challenges: Challenges = Field(default_factory=Challenges)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    reload: Reload = Field(
        default_factory=Reload,
        description="live reload: the policy file read again on SIGHUP or when it changes",
    )

    _source: str = PrivateAttr(default="<python>")
    _digest: str | None = PrivateAttr(default=None)
    _lines: Mapping[_KeyPath, int] = PrivateAttr(default_factory=dict)

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_a_number(cls, version: object) -> object:
        if isinstance(version, bool) or not isinstance(version, int):  # Literal[1] takes true, 1.0
            raise refuse("1")  # reworded by _reword, like any other version issue
        return version

    @field_validator("thresholds")
    @classmethod
    def _ascending(cls, thresholds: tuple[Threshold, ...]) -> tuple[Threshold, ...]:
        return tuple(sorted(thresholds, key=lambda threshold: threshold.score))

    @model_validator(mode="after")
    def _policy_wide(self, info: ValidationInfo) -> Policy:
        # from_string runs these checks on the raw document itself, to report them with the rest.
        if not (info.context or {}).get(_WIDE_CHECKED):
            data = {
                "mode": self.mode,
                "secret": self.secret,
                "audit": {"chain_key": self.audit.chain_key},
                "tiers": self.tiers,
                "thresholds": [{"tier": t.tier} for t in self.thresholds],
                "routes": [{"name": r.name, "exempt": r.exempt} for r in self.routes],
                "unmatched": self.unmatched,
                "risk": {"signals": dict(self.risk.signals)},
            }
            for path, _, expected in _policy_wide_problems(data):
                raise refuse(expected, at=path)
        return self

    @property
    def source(self) -> str:
        """The file the policy was read from, or "<string>"."""
        return self._source

    def line_of(self, path: _KeyPath) -> int | None:
        """The line of ``path`` in the policy's file (or of its closest enclosing key)."""
        return policy_yaml.line_in(self._lines, path)

    @property
    def digest(self) -> str:
        """``sha256:`` + hex of the exact source text; names the policy in audit records."""
        if self._digest is None:
            self._digest = _digest(self.model_dump_json())
        return self._digest

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Policy:
        source = os.fspath(path)
        try:
            with open(source, "rb") as file:
                text = file.read().decode("utf-8")
        except OSError as exc:
            raise PolicyError(
                [PolicyIssue(source, None, "", source, f"a readable file ({exc.strerror})")]
            ) from None
        except UnicodeDecodeError as exc:
            raise PolicyError(
                [PolicyIssue(source, None, "", source, f"UTF-8 text ({exc.reason})")]
            ) from None
        return cls.from_string(text, source=source)

    @classmethod
    def from_string(cls, text: str, source: str = "<string>") -> Policy:
        document = policy_yaml.load(text, source)
        issues = list(document.issues)
        policy = None
        if document.data is None and not issues:
            issues.append(document.issue((), None, "a policy: a mapping starting with version: 1"))
        elif not isinstance(document.data, Mapping) and not issues:
            issues.append(
                document.issue(
                    (), document.data, "a mapping of keys to values, starting with version: 1"
                )
            )
        elif isinstance(document.data, Mapping):
            issues += [document.issue(*problem) for problem in _policy_wide_problems(document.data)]
            try:
                policy = cls.model_validate(document.data, context={_WIDE_CHECKED: True})
            except ValidationError as exc:
                issues += [_reword_version(issue) for issue in document.issues_from(exc, cls)]
        if issues or policy is None:
            issues = [_reword(issue) for issue in issues]
            raise PolicyError(sorted(issues, key=lambda issue: issue.line or 0))
        policy._source, policy._digest, policy._lines = source, _digest(text), document.lines
        return policy

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of a policy file, for editors' YAML support."""
        schema = cls.model_json_schema(mode="validation")
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            **schema,
            "title": "guardrail policy",
        }


def check_files(paths: Sequence[str]) -> list[PolicyIssue]:
    """Every issue of every file in ``paths`` (empty when all of them load)."""
    issues: list[PolicyIssue] = []
    for path in paths:
        try:
            Policy.from_yaml(path)
        except PolicyError as exc:
            issues.extend(exc.issues)
        except Exception as exc:  # a bug in guardrail must not hide the other files' issues
            expected = f"a policy guardrail can read (it failed: {type(exc).__name__}: {exc})"
            issues.append(PolicyIssue(path, None, "", path, expected))
    return issues


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _policy_wide_problems(data: Mapping[str, Any]) -> list[tuple[_KeyPath, object, str]]:
    """Checks across sections, on raw or validated data; malformed parts are left to fields."""
    problems: list[tuple[_KeyPath, object, str]] = []
    secret = data.get("secret")
    if (
        data.get("mode", "enforce") == "enforce"
        and isinstance(secret, str)
        and secret
        and (reference_kind(secret) == "literal")
    ):
        problems.append(
            (
                ("secret",),
                secret,
                "env:NAME or file:PATH; a literal secret is only accepted with mode: observe",
            )
        )
    problems += _chain_key_problems(data)
    tiers = data.get("tiers")
    names = sorted(str(name) for name in tiers) if isinstance(tiers, Mapping) else []
    thresholds = data.get("thresholds")
    for index, threshold in enumerate(thresholds if isinstance(thresholds, list | tuple) else ()):
        tier = threshold.get("tier") if isinstance(threshold, Mapping) else None
        if isinstance(tier, str) and tier not in names:
            defined = f"one of: {', '.join(names)}" if names else "none is defined under tiers"
            problems.append(
                (("thresholds", index, "tier"), tier, f"the name of a tier ({defined})")
            )
    problems += _signal_problems(data.get("risk"))
    routes = data.get("routes")
    seen: dict[str, int] = {}
    for index, route in enumerate(routes if isinstance(routes, list | tuple) else ()):
        name = route.get("name") if isinstance(route, Mapping) else None
        if isinstance(name, str) and name in seen:
            problems.append(
                (
                    ("routes", index, "name"),
                    name,
                    f"a name not used before (routes[{seen[name]}] is already {name!r})",
                )
            )
        elif isinstance(name, str):
            seen[name] = index
    problems += _unmatched_problems(data.get("unmatched", PASS), routes)
    return problems


def _chain_key_problems(data: Mapping[str, Any]) -> list[tuple[_KeyPath, object, str]]:
    audit = data.get("audit")
    key = audit.get("chain_key") if isinstance(audit, Mapping) else None
    if not isinstance(key, str) or not key:
        return []  # absent, or not a string: the field's own error
    if key == DERIVE_FROM_SECRET:
        if data.get("secret") is None:
            expected = "env:NAME or file:PATH; `secret` derives the key from the policy's " + (
                "secret, and this policy has none"
            )
            return [(("audit", "chain_key"), key, expected)]
        return []
    if data.get("mode", "enforce") == "enforce" and reference_kind(key) == "literal":
        expected = (
            "env:NAME, file:PATH or secret (a subkey of the policy's secret); a literal key "
            "is only accepted with mode: observe"
        )
        return [(("audit", "chain_key"), key, expected)]
    return []


def _unmatched_problems(value: object, routes: object) -> list[tuple[_KeyPath, object, str]]:
    if not isinstance(value, str) or value in (PASS, REFUSE):
        return []  # not a string: the field's own error
    named = (
        [r for r in routes if isinstance(r, Mapping)] if isinstance(routes, list | tuple) else []
    )
    names = [str(r.get("name")) for r in named]
    expected = (
        "pass (served unguarded, the default), refuse (404), or the name of a route whose "
        "limits apply to requests no route matches"
    )
    if value not in names:
        listed = f"one of: {', '.join(names)}" if names else "no route is defined"
        return [(("unmatched",), value, f"{expected} ({listed})")]
    if any(r.get("name") == value and r.get("exempt") is True for r in named):
        return [(("unmatched",), value, f"{expected}: {value} is exempt, which is pass")]
    return []


def _signal_problems(risk: object) -> list[tuple[_KeyPath, object, str]]:
    signals = risk.get("signals") if isinstance(risk, Mapping) else None
    problems: list[tuple[_KeyPath, object, str]] = []
    for name, conf in signals.items() if isinstance(signals, Mapping) else ():
        if name not in SIGNAL_NAMES:
            problems.append(
                (
                    ("risk", "signals", name),
                    name,
                    f"a built-in signal ({', '.join(SIGNAL_NAMES)}); `guardrail signals` "
                    "lists them",
                )
            )
        elif name != "reasoning_extraction" and _has_patterns(conf):
            problems.append(
                (
                    ("risk", "signals", name, "patterns"),
                    name,
                    "no patterns here: only reasoning_extraction takes a pattern list",
                )
            )
    return problems


def _has_patterns(conf: object) -> bool:
    if isinstance(conf, Mapping):
        return "patterns" in conf
    return getattr(conf, "patterns", None) is not None


def _reword_version(issue: PolicyIssue) -> PolicyIssue:
    # Only validation issues: a duplicate `version:` key keeps its own message.
    if issue.path == "version":
        expected = "1, the policy format version (required; 1 is the only one so far)"
        return PolicyIssue(issue.file, issue.line, issue.path, issue.value, expected)
    return issue


def _reword(issue: PolicyIssue) -> PolicyIssue:
    # Never echo a secret or a raw API key into an error message: those end up in CI logs.
    secret = issue.path.endswith(("secret", "chain_key")) and isinstance(issue.value, str)
    secret = secret and not (issue.path.endswith("chain_key") and issue.value == "secret")
    if secret and reference_kind(str(issue.value)) == "literal":
        value = "(a literal secret, not shown)"
        return PolicyIssue(issue.file, issue.line, issue.path, value, issue.expected)
    if issue.path.startswith("allow.api_keys[") and isinstance(issue.value, str):
        value = "(not shown: it may be a raw API key)"
        return PolicyIssue(issue.file, issue.line, issue.path, value, issue.expected)
    return issue
