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
from ipaddress import ip_network
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
from guardrail.policy_schema import editor_schema
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
    SiteName,
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
    # Every field has a docstring under it: one sentence saying what the key does, its unit and
    # what the default means. It becomes the key's description in `guardrail schema`, which
    # editors show on hover (policy_schema reads it; tests/test_schema.py fails on a key without).
    model_config = ConfigDict(frozen=True, extra="forbid")


class ApiKeyIdentity(_Model):
    header: Header = "authorization"
    """The header carrying the API key; "Bearer " is stripped, and the key is only ever kept as a
    keyed hash (k: and 32 hex digits)."""


class AccountIdentity(_Model):
    """Exactly one of ``header`` or ``callable`` ("module:function" taking the ASGI scope)."""

    header: Header | None = None
    """The header naming the account, believed only from a trusted_proxies peer (which must set it
    and drop the client's own)."""
    callable: CallableRef | None = None
    """A "module:function" taking the ASGI scope and returning the account or None; imported when
    the policy loads."""
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
    """Addresses or CIDR networks whose forwarding header is believed: the client is the rightmost
    hop that is not one of them. Empty: the peer's address is the client's."""
    header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    """The one forwarding header the trusted proxies write, x-forwarded-for or forwarded (RFC
    7239); the other is never read (a proxy that appends to one passes the other through from
    the client, who could choose its address)."""
    ipv6_prefix: int = Field(default=64, ge=0, le=128, strict=True)
    """Leading bits of an IPv6 client's address that per: ip limits and a keyless client's risk
    principal key on (SLAAC and privacy addresses rotate inside a /64); 128: the address. IPv4:
    the address."""


class SubnetConfig(_Model):
    ipv4_prefix: int = Field(default=24, ge=0, le=32, strict=True)
    """Leading bits of an IPv4 address that make its network (per: subnet limits, network
    signals): 24, a /24."""
    ipv6_prefix: int = Field(default=48, ge=0, le=128, strict=True)
    """Leading bits of an IPv6 address that make its network: 48, a /48."""


class Identity(_Model):
    api_key: ApiKeyIdentity | None = Field(default_factory=ApiKeyIdentity)
    """Where the API key is read (default the authorization header); null: no key is read."""
    account: AccountIdentity | None = None
    """Where the account is read, {header: …} or {callable: …}; unset: none, and per: account
    limits fall back to the API key, then the IP."""
    client_ip: ClientIp = Field(default_factory=ClientIp)
    """How the client's address is found behind trusted proxies."""
    subnet: SubnetConfig = Field(default_factory=SubnetConfig)
    """How client addresses are grouped into networks."""


class Match(_Model):
    path: Pattern
    """A regular expression matched at the start of the path the app routes on (root_path
    removed: written without a mount's prefix)."""
    methods: Annotated[frozenset[Method], Field(min_length=1)] | None = None
    """The HTTP methods the route covers, such as [POST]; unset: any method."""


class Limit(_Model):
    per: Literal["api_key", "account", "ip", "subnet", "global"]
    """Whose bucket: api_key, account, ip, subnet or global; a request without that identity
    falls back to the next coarser one (account, then api_key, then ip)."""
    rate: RateValue
    """How fast the bucket refills: a rate in limits notation such as 60/minute or 10 per second."""
    burst: Count | None = None
    """The bucket's size, the most cost that passes at once; unset: the rate's amount."""
    cost: Cost = 1
    """What one request spends: a whole number of units (default 1), or tokens (a token budget:
    the request's LLM tokens, on a route that inspects)."""

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
    """The route's name, unique in the policy: audit records and bucket keys carry it."""
    match: Match
    """Which requests the route covers: a path pattern and, optionally, methods."""
    exempt: bool = Field(default=False, strict=True)
    """true: never limited nor audited; the response only gains Guardrail-Request-Id."""
    inspect: MeterRef | None = None
    """openai: read the JSON body for the prompt and its parameters, in the OpenAI-compatible
    shape the request's path names; openai.chat, openai.completions, openai.responses: one shape
    whatever the path; "module:attribute": a guardrail.metering.Meter for another protocol.
    Unset: not read."""
    inspect_max_bytes: Size = 262_144
    """How much of an inspected body is read (bytes, or a size such as 256KB); a larger body
    counts its size as its prompt."""
    inspect_timeout: PositiveDuration = 10.0
    """How long an inspected body may take to arrive (a duration such as 10s): a client that
    stalls mid-body gets a 408 instead of holding the connection and what it sent so far."""
    headers: bool = Field(default=False, strict=True)
    """true: RateLimit and x-ratelimit-* headers on allowed responses too (429s always carry
    them)."""
    default_max_tokens: Count = 4096
    """The output a request that names no max_tokens is assumed to ask for: reserved against the
    route's token budgets until its response says what it used."""
    limits: tuple[Limit, ...] = ()
    """The route's buckets, decided together and all-or-nothing: a request one refuses spends
    from none."""

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
    """Scales the signal's part of the risk score; 0 turns the signal off."""
    patterns: tuple[Pattern, ...] | None = None
    """reasoning_extraction only: the phrasings that count as asking for hidden reasoning
    (case-insensitive regexes, searched in the prompt's opening and closing characters); replaces
    the built-in list."""


class Risk(_Model):
    half_life: PositiveDuration = 6 * 3600.0
    """How fast accumulated evidence fades: every risk counter halves in this time (a duration
    such as 6h)."""
    # backends/risk_shared.py does the sharing.
    share_every: ShareEvery = 0.05
    """With Redis storage: how often each worker sends Redis the evidence it gathered and takes
    what the others sent (a duration from 10ms to 10s); request: on every request, in the
    request's round trips (exact, and it costs most of a worker)."""
    signals: dict[str, SignalConfig] = Field(default_factory=dict)
    """Built-in signals by name and their weight (`guardrail signals` lists them); an unknown
    name is refused."""


class Allow(_Model):
    accounts: tuple[str, ...] = ()
    """Accounts the risk engine never escalates."""
    api_keys: tuple[KeyHash, ...] = ()
    """API keys the risk engine never escalates, as keyed hashes (k: and 32 hex digits, printed
    by `guardrail hash-key`), never the keys."""
    cidrs: tuple[Network, ...] = ()
    """Addresses or CIDR networks whose clients the risk engine never escalates."""


class Threshold(_Model):
    score: float = Field(ge=0, le=100, strict=True, allow_inf_nan=False)
    """The risk score, 0 to 100, at which this band starts."""
    action: Literal["throttle", "challenge", "block"]
    """What the band does: throttle (serve through `tier`), challenge (403 with a challenge) or
    block (403)."""
    tier: str | None = None
    """The name of the tier, under tiers, that a throttle band serves through."""

    @model_validator(mode="after")
    def _throttle_names_tier(self) -> Threshold:
        if self.action == "throttle" and self.tier is None:
            raise refuse("the name of a tier: a throttle threshold needs one", at=("tier",))
        return self


class Hysteresis(_Model):
    margin: float = Field(default=10.0, ge=0, strict=True, allow_inf_nan=False)
    """Score points under a band's entry a subject must fall to leave the band."""
    cooldown: Duration = 900.0
    """How long the score must stay that low before the subject leaves the band (a duration such
    as 15m)."""


class Tier(_Model):
    limits: tuple[Limit, ...] = ()
    """Buckets charged on top of the route's (cost: tokens ones only on inspected routes)."""
    delay: Duration | None = None
    """Awaited before the app is called (a duration such as 2s); unset: no delay."""
    max_tokens: Count | None = None
    """The output cap written into the inspected body the app gets: lowered, or added when the
    body names none; unset: left as asked."""
    strip: frozenset[Literal["logprobs", "n"]] = frozenset()
    """What to take out of inspected bodies: logprobs (and top_logprobs, logprob includes), n
    (n and best_of above 1): the richest material for distilling a model."""
    stream_rate: RateValue | None = None
    """At most this many streamed (SSE) events a second reach the client, the first at once (a
    rate such as 20/second); unset: not paced."""
    header: bool = Field(default=False, strict=True)
    """true: responses carry Guardrail-Tier, naming the tier."""


class Captcha(_Model):
    sitekey: str = Field(min_length=1)
    """The provider's public site key, rendered into the challenge page's widget."""
    secret: ReferencedSecret
    """The siteverify secret: env:NAME or file:PATH, never written into the policy."""
    verify_url: HttpUrl
    """The siteverify endpoint a solved token is checked at."""
    timeout: PositiveDuration = 3.0
    """How long siteverify may take (a duration such as 3s) before on_error applies."""
    on_error: Literal["pow", "open", "closed"] = "pow"
    """siteverify slow or down: pow (503, answer the same challenge with the proof of work), open
    (pass the client), closed (503, try later)."""
    hostnames: tuple[Hostname, ...] = ()
    """The hosts the challenge page is served on (api.example.com, *.example.com): a token
    siteverify says was solved anywhere else is refused. Empty: the host the request reached
    (its Host header, or the forwarded host from a trusted proxy), which a non-browser client
    chooses (a caution says so)."""


class HCaptcha(Captcha):
    verify_url: HttpUrl = "https://api.hcaptcha.com/siteverify"
    """The siteverify endpoint a solved token is checked at (hCaptcha's own by default)."""


class Turnstile(Captcha):
    verify_url: HttpUrl = "https://challenges.cloudflare.com/turnstile/v0/siteverify"
    """The siteverify endpoint a solved token is checked at (Cloudflare's own by default)."""


class Pow(_Model):
    difficulty: int = Field(default=18, ge=1, le=32, strict=True)
    """Leading zero bits the SHA-256 of the answer must have; each bit doubles the work (18:
    about 260,000 hashes, half a second)."""


class Clearance(_Model):
    ttl: PositiveDuration = 1800.0
    """How long a clearance earned by a passed challenge lasts (a duration such as 30m)."""
    max_requests: Count = 500
    """How many requests one clearance covers, counted server-side."""
    bind: tuple[Literal["subject", "subnet", "user_agent", "ip"], ...] = (
        "subject",
        "subnet",
        "user_agent",
    )
    """What a clearance is bound to (subject, subnet, user_agent, ip): a request that differs in
    one of them is not cleared by it."""
    secrets: tuple[ReferencedSecret, ...] = ()
    """Signing secrets (env:NAME or file:PATH), newest first: the first signs, every one
    verifies, for rotation. Empty: the policy's `secret`."""


VERIFY_LIMITS = (
    Limit.model_validate({"per": "ip", "rate": "10/minute", "burst": 10}),
    Limit.model_validate({"per": "subnet", "rate": "60/minute", "burst": 60}),
)


class Challenges(_Model):
    prefix: PathPrefix = "/.guardrail"
    """Where guardrail serves its own challenge pages and endpoints."""
    site_name: SiteName | None = None
    """The site's name as the challenge page shows it ("Checking your connection to ..."): one
    line, at most 80 characters. Default: the host the request was sent to, as guardrail sees it
    behind trusted proxies."""
    order: tuple[Literal["hcaptcha", "turnstile", "pow"], ...] = Field(
        default=("pow",), min_length=1
    )
    """What a challenged browser is offered, in order: hcaptcha, turnstile, pow."""
    hcaptcha: HCaptcha | None = None
    """hCaptcha's site key, secret and siteverify settings; required when order lists it."""
    turnstile: Turnstile | None = None
    """Cloudflare Turnstile's site key, secret and siteverify settings; required when order
    lists it."""
    pow: Pow = Field(default_factory=Pow)
    """The proof of work: solved by the page's script, or by an API client."""
    clearance: Clearance = Field(default_factory=Clearance)
    """What a passed challenge earns: a signed clearance, its lifetime, its requests, what it is
    bound to."""
    # Answers are rare: a flood of them is not a person.
    verify_limits: tuple[Limit, ...] = Field(default_factory=lambda: VERIFY_LIMITS)
    """The verify endpoint's own buckets, charged before its body is read (429 beyond them); []
    turns them off."""

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
    """The size at which the file is rotated (bytes, or a size such as 100MB)."""
    keep: Count = 10
    """How many rotated files are kept (PATH.1 … PATH.keep); older ones are deleted."""


class AuditConfig(_Model):
    sink: SinkUri = "stdout://"
    """Where records go: file://PATH ({pid} in PATH: one trail per process), stdout://, or
    redis://host:6379/0?stream=guardrail:audit (also maxlen=, timeout=)."""
    rotate: Rotate = Field(default_factory=Rotate)
    """File sink: size rotation, PATH to PATH.1 … PATH.keep; a line is never split."""
    sample_allowed: float = Field(default=0.0, ge=0, le=1, strict=True, allow_inf_nan=False)
    """The share, 0 to 1, of plain allows also recorded; every other decision always is."""
    hash_chain: bool = Field(default=True, strict=True)
    """true: each record carries prev, the SHA-256 of the line before, which `guardrail audit
    verify` checks."""
    chain_key: ChainKey | None = None
    """Keys the hash chain (HMAC-SHA256, checked by `guardrail audit verify --policy`), so the
    trail cannot be rewritten without it: env:NAME, file:PATH, or secret (a subkey of the policy's
    secret). Unset: plain SHA-256, which anyone who can write the trail can recompute."""
    aggregate: Duration = 10.0
    """Repeated refusals of one subject within this interval become one record with a count (a
    duration, at most 1h); 0: a record each."""

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


#: Bytes one served response costs in the provenance index (``provenance/index.py``).
PROVENANCE_ENTRY_BYTES = 56
#: What ``provenance.path`` must hold: each worker process saves a file of its own.
WORKER_PLACEHOLDER = "{worker}"
MAX_PROVENANCE_ENTRIES = 100_000_000


#: The breaker probes at least this often: Redis is back in use within this of its recovery.
MAX_PROBE_EVERY = 60.0


class StorageBreaker(_Model):
    """Redis failing ``failures`` times in a row is skipped: on_storage_error applies at once,
    without waiting for a timeout, until a probe (one every ``probe_every``) passes."""

    failures: int = Field(default=3, ge=0, le=1000, strict=True)
    """Redis failures in a row (errors or timeouts) that open the breaker; 0: no breaker."""
    probe_every: PositiveDuration = 0.25
    """How often an open breaker probes Redis (a duration, at most 1m); the first probe that
    passes puts traffic back on Redis."""

    @field_validator("probe_every")
    @classmethod
    def _probes_soon(cls, seconds: float) -> float:
        if seconds > MAX_PROBE_EVERY:  # Redis stays unused this long after it is back
            raise refuse("a duration of at most 1m (250ms is the default)")
        return seconds


#: Request headers a watermark seed must not replace: guardrail strips the client's copy.
_NOT_A_SEED_HEADER = frozenset(
    {
        "authorization",
        "cookie",
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "accept-encoding",
        "forwarded",
        "x-forwarded-for",
    }
)


class Watermark(_Model):
    key: ReferencedSecret
    """The secret the per-subject seeds are keyed with (env:NAME or file:PATH): seed =
    HMAC-SHA256(key, principal), first 8 bytes, shifted right one bit (0 <= seed < 2**63)."""
    header: Header | None = None
    """A request header that carries the seed to the app (e.g. x-guardrail-watermark-seed); the
    client's own copy is removed first. Unset: only request.state.guardrail.watermark_seed."""

    @field_validator("header")
    @classmethod
    def _own_header(cls, header: str | None) -> str | None:
        if header is not None and header in _NOT_A_SEED_HEADER:
            raise refuse(
                "a header of its own (e.g. x-guardrail-watermark-seed): the client's is removed"
            )
        return header


class Signatures(_Model):
    key: ReferencedSecret
    """The Ed25519 private key (PEM) responses are signed with: file:PATH or env:NAME."""
    key_id: str | None = Field(default=None, min_length=1)
    """The signatures' keyid; unset: guardrail-ed25519- and 16 hex digits of the public key's
    SHA-256 (`guardrail trace public-key` prints it with the key)."""
    max_bytes: Size = 1_048_576
    """The largest JSON response held to be signed, a size (its Content-Length: 1MiB, 256KB or
    bytes); larger ones, streams and responses without a length pass through unsigned."""


class Provenance(_Model):
    """What was served, to whom. With ``enabled``, sketches of the texts served on some routes,
    kept to trace a leaked dataset back to the subjects it was served to (``guardrail trace
    find``), and every response of those routes recorded in the audit trail with a receipt (the
    SHA-256 and size of its body as served); the watermark seed and signatures apart.

    Where the sketches go: with a Redis ``storage`` and no ``path`` set, into Redis next to the
    buckets (under the storage's prefix, one index every worker feeds, which ``guardrail trace
    find --index redis://…`` reads); otherwise each worker saves a file of its own (``path``).
    Setting ``path`` keeps the files with a Redis storage."""

    enabled: bool = Field(default=False, strict=True)
    """Capture what provenance routes serve (sketches for trace find, receipts in the trail)."""
    routes: tuple[str, ...] | None = None
    """The names of the routes whose responses are sketched and receipted; unset: every route
    with inspect."""
    retention: PositiveDuration = 30 * 86400.0
    """How long a sketch is kept (a duration; 30d)."""
    max_entries: Count = 1_000_000
    """The most sketches each worker keeps, the oldest dropped first; 56 bytes each (1,000,000:
    56 MB). In Redis: the most the one shared index keeps, ~60 bytes each."""
    path: str = Field(default="guardrail-provenance-{worker}.grprov", min_length=1)
    """Where each worker saves its index; {worker} becomes its slot (0, 1, …: the first whose
    lock file no other process holds), so workers never share a file and a restarted worker
    continues its slot's. `guardrail trace find --index` takes several files and globs. Unset
    with a Redis storage: no files, the index is in Redis; set, the files even then."""
    save_every: PositiveDuration = 60.0
    """How often the index is saved (a duration; 60s), and at shutdown. In Redis: how often
    each worker writes what it sketched (sooner once 4,096 entries wait), in one pipeline."""
    key: ReferencedSecret | None = None
    """env:NAME or file:PATH keying the sketches' hash functions, so nobody without it can tell
    which words a sketch rests on; an index only compares with suspects sketched under its key.
    Unset: a fixed key."""
    watermark: Watermark | None = None
    """A keyed seed per subject passed to the app for a model-side watermark (SynthID-Text,
    a vLLM logits processor), on every guarded route, whatever `enabled` says; unset: none."""
    signatures: Signatures | None = None
    """Sign JSON responses of guarded routes (RFC 9421 over an RFC 9530 Content-Digest, Ed25519):
    the one case where guardrail holds a body, up to max_bytes; unset: nothing is signed."""

    @field_validator("max_entries")
    @classmethod
    def _entries_fit(cls, entries: int) -> int:
        if entries > MAX_PROVENANCE_ENTRIES:  # the index file counts entries in 32 bits
            raise refuse("at most 100,000,000 entries (5.6 GB); 1,000,000 is the default")
        return entries

    @field_validator("path")
    @classmethod
    def _path_per_worker(cls, path: str) -> str:
        if WORKER_PLACEHOLDER not in path:
            raise refuse(
                "a file name holding {worker} (each worker saves its own file), such as "
                "guardrail-provenance-{worker}.grprov"
            )
        return path


class Reload(_Model):
    """What makes a running guardrail read its policy file again (``guardrail.reload``)."""

    sighup: bool = Field(default=False, strict=True)
    """Reload the policy file when the serving process receives SIGHUP (send it to the workers:
    a supervisor such as uvicorn --workers restarts them on SIGHUP)."""
    watch: bool = Field(default=False, strict=True)
    """Reload the policy file when it changes on disk (needs the reload extra: pip install
    'guardrail[reload]')."""


#: Who may read metrics.path unless the policy says: this host only. Not private networks:
#: behind a reverse proxy that trusted_proxies does not name, every request comes from the
#: proxy's (private) address, and the internet would read route names and volumes.
METRICS_FROM = ("127.0.0.0/8", "::1")


class MetricsConfig(_Model):
    """Prometheus metrics (pip install 'guardrail[metrics]'); off unless ``enabled``."""

    enabled: bool = Field(default=False, strict=True)
    """true: count decisions, the risk score, storage calls and errors, the breaker, the audit
    writer, challenges and token budgets (needs pip install 'guardrail[metrics]')."""
    path: PathPrefix | None = "/metrics"
    """Where guardrail serves them itself: GET or HEAD, answered before any route (never
    limited nor recorded), to allow_from only; null: not served."""
    registry: Literal["guardrail", "app"] = "guardrail"
    """guardrail: a registry of guardrail's own, served on path; app: prometheus-client's
    default registry, which the app exposes itself (then no path)."""
    allow_from: tuple[Network, ...] = Field(
        default_factory=lambda: tuple(ip_network(net) for net in METRICS_FROM)
    )
    """The client networks path answers (the client address as identity.client_ip finds it,
    behind trusted proxies the one they name); others get 403. Default: loopback only."""

    @model_validator(mode="after")
    def _one_exposition(self) -> MetricsConfig:
        if self.registry == "app" and "path" in self.model_fields_set and self.path is not None:
            raise refuse(
                "no path with registry: app (the app serves prometheus-client's default "
                "registry itself); or registry: guardrail to have guardrail serve it",
                at=("path",),
            )
        return self

    @property
    def served_on(self) -> str | None:
        """The path guardrail answers with the metrics, if any."""
        if not self.enabled or self.registry == "app":
            return None
        return self.path


_WIDE_CHECKED = "guardrail_policy_wide_checked"


class Policy(_Model):
    """A guardrail policy. Load with ``Policy.from_yaml(path)`` or ``Policy.from_string(text)``."""

    version: Literal[1]
    """The policy format's version: 1, the only one so far (required)."""
    mode: Literal["enforce", "observe"] = "enforce"
    """enforce: refuse, challenge and throttle; observe: decide and audit every request but never
    refuse or change one."""
    storage: StorageUri = "memory://"
    """Where buckets and risk state live: memory://, redis://host:6379/0, rediss://…,
    redis+cluster://h1:7000,h2:7001 or redis+sentinel://h1:26379/service (query: timeout=,
    prefix=, max_connections=)."""
    on_storage_error: Literal["fail_open", "fail_closed"] = "fail_open"
    """Redis unreachable: fail_open keeps limiting with a per-process in-memory limiter (records
    say degraded); fail_closed answers 503."""
    storage_breaker: StorageBreaker = Field(default_factory=StorageBreaker)
    """Skip a failing Redis: after `failures` failures in a row on_storage_error applies at once,
    until a probe (one every `probe_every`) passes."""
    max_subjects: Count = 1_000_000
    """Memory storage: the most subjects tracked; the least recently seen is evicted first."""
    secret: SecretRef | None = None
    """Keys API-key hashing and clearance signing: env:NAME or file:PATH (a literal only with
    mode: observe). Required with Redis storage; unset with memory storage: a random secret per
    process, and a warning."""
    identity: Identity = Field(default_factory=Identity)
    """How a request's API key, account, client IP and network are read."""
    routes: tuple[Route, ...] = ()
    """The guarded routes, first match wins: each with its path pattern, limits and inspection."""
    unmatched: str = Field(default=PASS, min_length=1)
    """A request no route matches: pass (served unguarded, counted in the trail), refuse (404),
    or the name of a route whose limits it takes (a default route)."""
    risk: Risk = Field(default_factory=Risk)
    """The behavioural risk engine: how fast evidence fades, how it is shared, signal weights."""
    allow: Allow = Field(default_factory=Allow)
    """Known-good subjects, never escalated by the risk engine; their limits still apply."""
    thresholds: tuple[Threshold, ...] = ()
    """Risk score bands (0-100) and their action; the highest band reached applies. Empty: the
    risk engine is off."""
    hysteresis: Hysteresis = Field(default_factory=Hysteresis)
    """How a subject leaves a band: once its score stays `margin` under it for `cooldown`."""
    tiers: dict[str, Tier] = Field(default_factory=dict)
    """Named degraded service levels that throttle thresholds send a subject to."""
    challenges: Challenges = Field(default_factory=Challenges)
    """What a challenged client is offered (CAPTCHA, proof of work) and the clearance it earns."""
    audit: AuditConfig = Field(default_factory=AuditConfig)
    """The audit trail: where records go, rotation, sampling, hash chain and aggregation."""
    provenance: Provenance = Field(default_factory=Provenance)
    """What was served, to whom: sketches of the outputs served on some routes, to trace a leaked
    dataset back to who was served it (`guardrail trace find`), with a receipt of every response
    there; the watermark seed hook; signed responses (issue 15). Off by default."""
    reload: Reload = Field(default_factory=Reload)
    """Live reload: the policy file read again on SIGHUP or when it changes."""
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    """Prometheus metrics of what guardrail decides and of its storage, audit and challenges;
    off unless enabled."""

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
            mark_header = self.provenance.watermark and self.provenance.watermark.header
            data = {
                "mode": self.mode,
                "secret": self.secret,
                "audit": {"chain_key": self.audit.chain_key},
                "tiers": self.tiers,
                "thresholds": [{"tier": t.tier} for t in self.thresholds],
                "routes": [{"name": r.name, "exempt": r.exempt} for r in self.routes],
                "unmatched": self.unmatched,
                "risk": {"signals": dict(self.risk.signals)},
                "identity": {
                    "api_key": self.identity.api_key and {"header": self.identity.api_key.header},
                    "account": self.identity.account and {"header": self.identity.account.header},
                },
                "provenance": {
                    "routes": self.provenance.routes,
                    "watermark": self.provenance.watermark and {"header": mark_header},
                },
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
        return editor_schema(
            cls, "A guardrail policy: `guardrail check` validates it with every error at once."
        )


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
    problems += _provenance_problems(data.get("provenance"), routes)
    problems += _seed_header_problems(data)
    return problems


def _provenance_problems(provenance: object, routes: object) -> list[tuple[_KeyPath, object, str]]:
    named = provenance.get("routes") if isinstance(provenance, Mapping) else None
    if not isinstance(named, list | tuple):
        return []  # unset, or not a list: the field's own error
    defined = (
        [r for r in routes if isinstance(r, Mapping)] if isinstance(routes, list | tuple) else []
    )
    guarded = [str(r.get("name")) for r in defined if r.get("exempt") is not True]
    exempt = {str(r.get("name")) for r in defined if r.get("exempt") is True}
    listed = (
        f"one of: {', '.join(guarded)}" if guarded else "no route that is not exempt is defined"
    )
    problems: list[tuple[_KeyPath, object, str]] = []
    for index, name in enumerate(named):
        if isinstance(name, str) and name not in guarded:
            why = (
                f"{name} is exempt: guardrail never sees its responses; " if name in exempt else ""
            )
            problems.append(
                (("provenance", "routes", index), name, f"the name of a route ({why}{listed})")
            )
    return problems


def _seed_header_problems(data: Mapping[str, Any]) -> list[tuple[_KeyPath, object, str]]:
    # The client's copy of the seed header is removed: it must not be one identity reads.
    provenance = data.get("provenance")
    mark = provenance.get("watermark") if isinstance(provenance, Mapping) else None
    header = mark.get("header") if isinstance(mark, Mapping) else None
    identity = data.get("identity")
    if not isinstance(header, str) or not isinstance(identity, Mapping):
        return []
    for member in ("api_key", "account"):
        conf = identity.get(member)
        name = conf.get("header") if isinstance(conf, Mapping) else None
        if isinstance(name, str) and name.lower() == header.lower():
            expected = f"a header of its own: identity.{member}.header reads {name}"
            return [(("provenance", "watermark", "header"), header, expected)]
    return []


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
    secret = issue.path.endswith(
        ("secret", "chain_key", "provenance.key", "watermark.key", "signatures.key")
    )
    secret = secret and isinstance(issue.value, str)
    secret = secret and not (issue.path.endswith("chain_key") and issue.value == "secret")
    if secret and reference_kind(str(issue.value)) == "literal":
        value = "(a literal secret, not shown)"
        return PolicyIssue(issue.file, issue.line, issue.path, value, issue.expected)
    if issue.path.startswith("allow.api_keys[") and isinstance(issue.value, str):
        value = "(not shown: it may be a raw API key)"
        return PolicyIssue(issue.file, issue.line, issue.path, value, issue.expected)
    return issue
