"""limits.RouteTable: first match wins; ``unmatched:`` names the route for the rest."""

from __future__ import annotations

import pytest

from guardrail.limits import RouteTable
from guardrail.policy import Policy

POLICY = """
version: 1
routes:
  - name: health
    match: {path: "^/health$"}
    exempt: true
  - name: chat
    match: {path: "^/v1/chat/completions$", methods: [POST]}
    limits: [{per: ip, rate: 10/minute, burst: 3}]
"""


def table(unmatched: str = "") -> RouteTable:
    policy = Policy.from_string(POLICY + (f"unmatched: {unmatched}\n" if unmatched else ""))
    return RouteTable(policy.routes, policy.unmatched)


def test_first_match_wins_and_methods_count() -> None:
    routes = table()
    assert routes.match("/v1/chat/completions", "POST").name == "chat"  # type: ignore[union-attr]
    assert routes.match("/v1/chat/completions", "GET") is None
    assert routes.match("/chat/completions", "POST") is None


def test_pass_is_the_default() -> None:
    routes = table()
    assert routes.default is None and not routes.refuse


def test_a_default_route_is_the_named_one_with_its_buckets() -> None:
    routes = table("chat")
    assert routes.default is routes.routes[1]
    assert [lim.name for lim in routes.default.charged] == ["chat:0"]  # shared with /v1/...
    assert not routes.refuse


def test_refuse() -> None:
    routes = table("refuse")
    assert routes.refuse and routes.default is None


def test_a_route_name_the_policy_lacks_is_refused() -> None:
    policy = Policy.from_string(POLICY)
    with pytest.raises(ValueError, match="names no route"):
        RouteTable(policy.routes, "caht")
