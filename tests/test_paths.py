"""paths: guardrail routes on what Starlette routes on, and hands the client the prefixed path."""

from __future__ import annotations

import pytest
from starlette._utils import get_route_path

from guardrail.paths import canonical, home, irregular, public_path, root_of, route_path

CASES = [
    # (path, root_path, route path, public path)
    ("/v1/chat", "", "/v1/chat", "/v1/chat"),
    ("/llm/v1/chat", "/llm", "/v1/chat", "/llm/v1/chat"),  # uvicorn >= 0.26, a Mount
    ("/v1/chat", "/llm", "/v1/chat", "/llm/v1/chat"),  # Hypercorn, Daphne: path as forwarded
    ("/llm", "/llm", "", "/llm"),  # the mount point itself
    ("/llmx/v1", "/llm", "/llmx/v1", "/llm/llmx/v1"),  # not at a segment boundary
    ("/a/b/v1", "/a/b", "/v1", "/a/b/v1"),  # nested mounts
]


@pytest.mark.parametrize(("path", "root", "routed", "public"), CASES)
def test_route_and_public_paths(path: str, root: str, routed: str, public: str) -> None:
    scope = {"type": "http", "path": path, "root_path": root}
    assert route_path(scope) == routed == get_route_path(scope)  # Starlette's rule, exactly
    assert public_path(scope) == public
    assert root_of(scope) == root


def test_no_root_path_key() -> None:
    scope = {"type": "http", "path": "/v1"}
    assert route_path(scope) == public_path(scope) == "/v1"
    assert root_of(scope) == ""


CANONICAL = [
    # (path, root_path, what a normalising framework routes on)
    ("/v1/chat/completions/", "", "/v1/chat/completions"),  # Litestar drops a trailing /
    ("//v1//chat/completions", "", "/v1/chat/completions"),  # Litestar, Werkzeug: runs of /
    ("/x/v1/chat", "/x/", "/v1/chat"),  # Quart, Django: no segment boundary looked for
    ("/q/llm/v1/chat", "/llm", "/v1/chat"),  # Litestar: root_path wherever it first occurs
    ("/llm", "/llm", "/"),
]


@pytest.mark.parametrize(("path", "root", "routed"), CANONICAL)
def test_canonical(path: str, root: str, routed: str) -> None:
    scope = {"type": "http", "path": path, "root_path": root}
    assert irregular(route_path(scope), scope)
    assert canonical(scope) == routed


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/", "/healthz"])
def test_a_plain_path_is_regular(path: str) -> None:
    assert not irregular(path, {"type": "http", "path": path})


@pytest.mark.parametrize(
    ("root", "url"),
    [
        ("", "/"),
        ("/llm", "/llm/"),
        ("/llm/", "/llm/"),
        ("//evil.example", "/"),  # Daphne-Root-Path from the client: another host
        ("/\\evil.example", "/"),  # browsers read /\\ as //
        ("/a\r\nSet-Cookie: x=1", "/"),  # a header of its own
        ("/caf\u00e9", "/"),  # not a header value as is
    ],
)
def test_home_never_leads_off_the_site(root: str, url: str) -> None:
    assert home({"type": "http", "path": "/", "root_path": root}) == url
