"""A path the policy's route does not match but the app still routes to its chat handler.

Litestar routes on ``normalize_path`` (runs of ``/`` collapsed, a trailing ``/`` dropped) and
removes ``root_path`` wherever it first occurs in the path; Quart (Werkzeug) drops leading
slashes and removes ``root_path`` without looking for a segment boundary. A policy route
``/v1/chat/completions$`` matched on the path as sent let each of these through unlimited
(served 6 of 6 with burst 4). Daphne takes ``root_path`` from the client's own
``Daphne-Root-Path`` header, so there the client picks it.
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tests.deploy import _frameworks_servers as servers
from tests.deploy._frameworks_servers import running, write_policy

BURST = 4
POLICY = """
version: 1
secret: env:GUARDRAIL_SECRET
routes:
  - name: chat
    match: {path: /v1/chat/completions$, methods: [POST]}
    limits: [{per: ip, rate: 60/hour, burst: 4}]
"""
APPS = {
    "litestar": "tests.deploy._path_tricks_apps:litestar_app",
    "quart": "tests.deploy._path_tricks_apps:quart_app",
}


def post(url: str, target: str, headers: dict[str, str], method: str = "POST") -> int:
    """The status of ``POST target`` sent as is (no client library normalising it)."""
    parts = urlsplit(url)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Content-Length: 0"]
    lines += ["Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


CASES = [
    # app, server, server arguments, target, headers
    ("litestar", "uvicorn", (), "/v1/chat/completions/", {}),
    ("litestar", "uvicorn", (), "/v1//chat/completions", {}),
    ("quart", "hypercorn", (), "//v1/chat/completions", {}),
    ("litestar", "hypercorn", ("--root-path", "/llm"), "/q/llm/v1/chat/completions", {}),
    ("quart", "daphne", (), "/x/v1/chat/completions", {"Daphne-Root-Path": "/x/"}),
    ("litestar", "daphne", (), "/q/zz/v1/chat/completions", {"Daphne-Root-Path": "/zz"}),
]


@pytest.mark.parametrize(("app", "server", "extra", "target", "headers"), CASES)
def test_a_path_the_app_routes_to_chat_is_limited_as_chat(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    app: str,
    server: str,
    extra: tuple[str, ...],
    target: str,
    headers: dict[str, str],
) -> None:
    policy, _ = write_policy(tmp_path, POLICY)
    monkeypatch.setitem(servers.APPS, app, APPS[app])
    with running(app, server, policy, *extra) as served:
        statuses = [post(served.url, target, headers) for _ in range(BURST + 2)]
    served_count = statuses.count(200)
    assert served_count <= BURST, (f"served {served_count} of {BURST + 2}", statuses, served.log)
    assert statuses[-1] == 429, (statuses, served.log)


@pytest.mark.parametrize(("app", "server"), [("quart", "daphne")])  # h11 refuses `post`
def test_a_method_the_app_reads_as_post_is_limited_as_post(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app: str, server: str
) -> None:
    """Werkzeug (Quart) and Django upper-case the method; h11 and Twisted pass ``post`` as sent."""
    policy, _ = write_policy(tmp_path, POLICY)
    monkeypatch.setitem(servers.APPS, app, APPS[app])
    with running(app, server, policy) as served:
        statuses = [post(served.url, "/v1/chat/completions", {}, "post") for _ in range(BURST + 2)]
    served_count = statuses.count(200)
    assert served_count <= BURST, (f"served {served_count} of {BURST + 2}", statuses, served.log)
    assert statuses[-1] == 429, (statuses, served.log)
