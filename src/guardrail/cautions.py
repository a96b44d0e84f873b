"""Settings that load but leave a way around guardrail: ``guardrail check`` prints them as
warnings (the policy is still accepted) and the middleware logs them once at startup.

Each caution is a function of the policy that yields ``(key path, value, what it leaves open
and the fix)``; ``cautions`` locates each in the policy's file. A new caution is one more
function in ``CAUTIONS``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from guardrail.actions.hcaptcha import HCAPTCHA
from guardrail.actions.turnstile import TURNSTILE
from guardrail.errors import PolicyIssue
from guardrail.policy_yaml import KeyPath, render_path

if TYPE_CHECKING:
    from guardrail.policy import Policy

Caution = tuple[KeyPath, object, str]

_TEST_SITEKEYS = HCAPTCHA.test_sitekeys | TURNSTILE.test_sitekeys


def _captcha_fails_open(policy: Policy) -> Iterator[Caution]:
    for name in ("hcaptcha", "turnstile"):
        captcha = getattr(policy.challenges, name, None)
        if captcha is not None and captcha.on_error == "open":
            yield (
                ("challenges", name, "on_error"),
                "open",
                "pow or closed: with open, a siteverify that is down or slow (or made slow) "
                "passes every challenge answered with any token",
            )


def _captcha_hostname_from_client(policy: Policy) -> Iterator[Caution]:
    for name in ("hcaptcha", "turnstile"):
        captcha = getattr(policy.challenges, name, None)
        if captcha is None or captcha.hostnames or captcha.sitekey in _TEST_SITEKEYS:
            continue
        yield (
            ("challenges", name, "hostnames"),
            [],
            "the hosts the challenge page is served on, e.g. [api.example.com]: without them "
            "a token's hostname is compared with the host the request reached (its Host header, "
            "or X-Forwarded-Host from a trusted proxy), which a client "
            "other than a browser chooses, and only the sitekey's domain list at the provider "
            "stops a token solved on another site",
        )


def _captcha_test_sitekey(policy: Policy) -> Iterator[Caution]:
    for name in ("hcaptcha", "turnstile"):
        captcha = getattr(policy.challenges, name, None)
        if captcha is not None and captcha.sitekey in _TEST_SITEKEYS:
            yield (
                ("challenges", name, "sitekey"),
                captcha.sitekey,
                "your own sitekey: this is a published test key, whose siteverify passes the "
                "published dummy token, so every challenge can be answered without a person",
            )


def _verify_unlimited(policy: Policy) -> Iterator[Caution]:
    if not policy.challenges.verify_limits:
        yield (
            ("challenges", "verify_limits"),
            [],
            "at least one limit (the default: 10/minute per ip, 60/minute per subnet): "
            "without one, each answer posted costs a store read, and one naming a CAPTCHA "
            "a siteverify call, as often as anyone likes",
        )


def _refusals_one_record_each(policy: Policy) -> Iterator[Caution]:
    if policy.audit.aggregate == 0:
        yield (
            ("audit", "aggregate"),
            0,
            "an interval such as 10s (the default): with 0 every refusal is a record of its "
            "own, and one client refused as fast as it can send pushes earlier records out of "
            "the trail's retention (rotate.keep files, a stream's maxlen)",
        )


def _account_header_unread(policy: Policy) -> Iterator[Caution]:
    identity = policy.identity
    account = identity.account
    if (
        account is not None
        and account.header is not None
        and not identity.client_ip.trusted_proxies
    ):
        yield (
            ("identity", "account", "header"),
            account.header,
            "an account header is believed only from identity.client_ip.trusted_proxies (a "
            "client could name any account), and none is listed: every account is unknown. "
            "List the proxy that sets the header (and drops the client's own), or use "
            "account: {callable: ...}",
        )


#: Seconds beyond which a body deadline no longer bounds what stalled clients hold.
SLOW_BODY = 60.0


def _bodies_wait_long(policy: Policy) -> Iterator[Caution]:
    for index, route in enumerate(policy.routes):
        if route.inspect is not None and route.inspect_timeout > SLOW_BODY:
            yield (
                ("routes", index, "inspect_timeout"),
                route.inspect_timeout,
                f"at most {SLOW_BODY:g}s: a client may hold a connection and up to "
                "inspect_max_bytes this long for every request it starts and never finishes",
            )


#: A path no route of an API names: a route that matches it takes every request (a catch-all).
_PROBE = "/guardrail-unmatched-probe/x"


def _unmatched_unlimited(policy: Policy) -> Iterator[Caution]:
    # Said only of a policy that reads LLM bodies: an API whose other paths go unlimited.
    if policy.unmatched != "pass" or not any(r.inspect is not None for r in policy.routes):
        return
    if any(r.match.methods is None and r.match.path.match(_PROBE) for r in policy.routes):
        return  # a catch-all route decides what the others leave
    yield (
        ("unmatched",),
        "pass",
        "the name of a route (its limits apply to every request no route matches) or refuse "
        "(404): with pass such a request is served unlimited and unread, and LLM servers answer "
        "one endpoint at several paths (LiteLLM: /chat/completions, /engines/{model}/chat/"
        "completions, /openai/deployments/{model}/chat/completions besides /v1/...); "
        "`guardrail routes POLICY --app module:app` lists what no route covers",
    )


def _unmatched_spend_tokens(policy: Policy) -> Iterator[Caution]:
    for route in policy.routes:
        if route.name == policy.unmatched and any(lim.cost == "tokens" for lim in route.limits):
            yield (
                ("unmatched",),
                route.name,
                "a route without cost: tokens limits (a request-limited default), and a path "
                "regex on the token-budgeted route that names every path of the endpoint (e.g. "
                "(.*/)?chat/completions$): every unmatched request (GET /v1/models, a health "
                "check) "
                f"reserves {route.name}'s default_max_tokens of its token budgets, and keeps "
                "them when its response reports no usage",
            )


def _budget_outgrown(policy: Policy) -> Iterator[Caution]:
    # The other way round from the cautions above: traffic refused for good. A request that
    # names no max_tokens reserves default_max_tokens (a tier's max_tokens, written into it),
    # and one larger than the whole budget is refused every time (429, x-should-retry: false).
    outputs = [route.default_max_tokens for route in policy.routes if route.inspect is not None]
    for index, route in enumerate(policy.routes):
        for limit in route.limits:
            if limit.cost == "tokens" and route.default_max_tokens > limit.capacity:
                yield (
                    ("routes", index, "default_max_tokens"),
                    route.default_max_tokens,
                    f"at most {limit.capacity}, the most the route's token budget holds: a "
                    "request that names no max_tokens reserves this many tokens and its "
                    "prompt, and is refused every time",
                )
                break
    for name, tier in policy.tiers.items():
        output = tier.max_tokens if tier.max_tokens is not None else max(outputs, default=0)
        for index, limit in enumerate(tier.limits):
            if limit.cost == "tokens" and output > limit.capacity:
                yield (
                    ("tiers", name, "limits", index),
                    limit.rate.text,
                    f"room for at least {output} tokens (burst), or a lower tier max_tokens: "
                    "a request of this tier that names no max_tokens reserves that many and "
                    "its prompt, more than the budget ever holds, and is refused every time",
                )


def _metrics_public(policy: Policy) -> Iterator[Caution]:
    metrics = policy.metrics
    if metrics.served_on is None:
        return
    for index, network in enumerate(metrics.allow_from):
        if not (network.is_private or network.is_loopback):
            yield (
                ("metrics", "allow_from", index),
                str(network),
                "the networks your Prometheus scrapes from: the metrics name every route, "
                "tier and action and how often each is used, to anyone in this one",
            )


CAUTIONS: tuple[Callable[[Policy], Iterator[Caution]], ...] = (
    _captcha_fails_open,
    _captcha_hostname_from_client,
    _captcha_test_sitekey,
    _verify_unlimited,
    _refusals_one_record_each,
    _account_header_unread,
    _bodies_wait_long,
    _unmatched_unlimited,
    _unmatched_spend_tokens,
    _budget_outgrown,
    _metrics_public,
)


def cautions(policy: Policy) -> list[PolicyIssue]:
    """Every caution of ``policy``, located in its file where the key is written there."""
    found = []
    for caution in CAUTIONS:
        for path, value, advice in caution(policy):
            line = policy.line_of(path)
            found.append(PolicyIssue(policy.source, line, render_path(path), value, advice))
    return found
