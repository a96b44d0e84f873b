"""The middleware on requests no route matches (``unmatched:``) and under a path prefix
(``root_path``), through the ASGI interface."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.types import Message, Receive, Scope, Send

from guardrail import Guardrail

from conftest import FakeClock
from helpers import CHAT, audit_records, build, client

POLICY = """
version: 1
mode: {mode}
routes:
  - name: chat
    match: {{path: "^/v1/chat/completions$", methods: [POST]}}
    limits:
      - {{per: ip, rate: 1/hour, burst: 2}}
unmatched: {unmatched}
"""


def guard(tmp_path: Path, clock: FakeClock, unmatched: str, mode: str = "enforce") -> Guardrail:
    return build(tmp_path, clock, POLICY.format(unmatched=unmatched, mode=mode))


async def test_refuse_answers_404_and_passes_cors_preflights(tmp_path: Path, clock: FakeClock):
    app = guard(tmp_path, clock, "refuse")
    async with client(app) as http:
        refused = await http.post("/chat/completions", json=CHAT)
        preflight = await http.options("/chat/completions")
        served = await http.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 404
    assert refused.json()["type"] == "not-found" and "guardrail-request-id" in refused.headers
    assert refused.headers["connection"] == "close"  # its body was never read
    assert preflight.status_code == 405  # the app's own answer (its route takes GET)
    assert served.status_code == 200
    await app.shutdown()
    [record] = [r for r in audit_records(tmp_path) if r["action"] == "unmatched"]
    assert record["unmatched"] == "refuse"
    assert record["paths"] == {"POST /chat/completions": 1, "OPTIONS /chat/completions": 1}


async def test_observe_mode_refuses_nothing_and_counts(tmp_path: Path, clock: FakeClock):
    app = guard(tmp_path, clock, "refuse", mode="observe")
    async with client(app) as http:
        # passed to the app, whose catch-all takes GET only
        assert (await http.post("/chat/completions", json=CHAT)).status_code == 405
    await app.shutdown()
    assert [r["repeated"] for r in audit_records(tmp_path) if r["action"] == "unmatched"] == [1]


async def test_a_default_route_shares_the_named_routes_buckets(tmp_path: Path, clock: FakeClock):
    app = guard(tmp_path, clock, "chat")
    async with client(app) as http:
        statuses = [
            (await http.post(path, json=CHAT)).status_code
            for path in ("/chat/completions", "/v1/chat/completions", "/anything", "/x")
        ]
    # 2 admitted (the app answers the first 405: its catch-all takes GET), then the shared
    # bucket refuses whatever the path
    assert statuses == [405, 200, 429, 429]
    await app.shutdown()
    records = audit_records(tmp_path)
    assert {r["route"] for r in records if r["action"] == "limit"} == {"chat"}
    [counted] = [r for r in records if r["action"] == "unmatched"]
    assert counted["repeated"] == 3 and counted["unmatched"] == "chat"


async def websocket(app: Guardrail, path: str, root_path: str = "") -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": path, "root_path": root_path, "headers": []}
    await app({**scope, "client": ("203.0.113.7", 1)}, receive, send)
    return sent


async def ws_app(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.accept"})


async def test_websockets_unmatched_and_under_a_prefix(tmp_path: Path, clock: FakeClock):
    refusing = build(tmp_path, clock, POLICY.format(unmatched="refuse", mode="enforce"), app=ws_app)
    assert (await websocket(refusing, "/realtime"))[0]["type"] == "websocket.close"
    await refusing.shutdown()
    assert [r["paths"] for r in audit_records(tmp_path)] == [{"WEBSOCKET /realtime": 1}]

    # A mount: the route matches the path below root_path; its limits apply (burst 2, GET
    # handshakes against a POST route: unmatched, so the default route decides)
    (tmp_path / "audit.jsonl").unlink()
    limited = build(tmp_path, clock, POLICY.format(unmatched="chat", mode="enforce"), app=ws_app)
    answers = [(await websocket(limited, "/llm/ws", "/llm"))[0]["type"] for _ in range(3)]
    assert answers == ["websocket.accept", "websocket.accept", "websocket.close"]
    await limited.shutdown()
    [unmatched] = [r for r in audit_records(tmp_path) if r["action"] == "unmatched"]
    assert unmatched["paths"] == {"WEBSOCKET /ws": 3}  # as the routes see it: prefix removed


@pytest.mark.parametrize(
    ("path", "root_path", "recorded"),
    [
        ("/llm/v1/chat/completions", "/llm", "/llm/v1/chat/completions"),  # uvicorn, a Mount
        ("/v1/chat/completions", "/llm", "/llm/v1/chat/completions"),  # Hypercorn, Daphne
    ],
)
async def test_routes_match_below_root_path_and_records_keep_it(
    tmp_path: Path, clock: FakeClock, path: str, root_path: str, recorded: str
):
    app = guard(tmp_path, clock, "pass")
    statuses = []
    for _ in range(3):
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: Message, sent: list[Message] = sent) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "root_path": root_path,
            "headers": [],
            "query_string": b"",
            "client": ("203.0.113.7", 1),
        }
        await app(scope, receive, send)
        statuses.append(sent[0]["status"])
    await app.shutdown()
    assert statuses == [200, 200, 429]
    assert {r["path"] for r in audit_records(tmp_path) if r["action"] == "limit"} == {recorded}


TRICKS = """
version: 1
routes:
  - name: public
    match: {path: "^/public/"}
    exempt: true
  - name: chat
    match: {path: "^/v1/chat/completions$", methods: [POST]}
    limits: [{per: ip, rate: 1/hour, burst: 2}]
  - name: default
    match: {path: "/"}
    limits: [{per: ip, rate: 100/hour, burst: 100}]
"""


@pytest.mark.parametrize(
    ("path", "root_path"),
    [
        ("/v1/chat/completions/", ""),  # Litestar drops the trailing /: not the catch-all's
        ("//v1/chat/completions", ""),  # Werkzeug, Litestar: not the catch-all's
        ("/public/llm/v1/chat/completions", "/llm"),  # Litestar: not the exempt route's
        ("/x/v1/chat/completions", "/x/"),  # Quart, Django: no segment boundary
    ],
)
async def test_a_path_a_framework_normalises_is_decided_by_the_route_it_names(
    tmp_path: Path, clock: FakeClock, path: str, root_path: str
):
    app = build(tmp_path, clock, TRICKS)
    statuses = []
    for _ in range(3):
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: Message, sent: list[Message] = sent) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "post",  # Django and Quart serve it as POST
            "path": path,
            "root_path": root_path,
            "headers": [],
            "query_string": b"",
            "client": ("203.0.113.7", 1),
        }
        await app(scope, receive, send)
        statuses.append(sent[0]["status"])
    await app.shutdown()
    assert statuses[2] == 429, statuses  # chat's burst of 2
    assert {r["route"] for r in audit_records(tmp_path) if r["action"] == "limit"} == {"chat"}
