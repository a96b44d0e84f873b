"""The HTTP contract of the middleware (SPEC sections 1 and 3), through httpx.ASGITransport."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from guardrail import Guardrail, Policy
from guardrail.identity import hash_key

from helpers import (
    CHAT,
    POLICY,
    SECRET,
    audit_records,
    bearer,
    build,
    client,
    echo_app,
    lifespan,
)


async def test_allowed_response_carries_request_id_and_ratelimit_headers(tmp_path: Path, clock):
    app = build(tmp_path, clock)
    async with client(app) as http:
        response = await http.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))
    assert response.status_code == 200
    assert len(response.headers["guardrail-request-id"]) >= 16
    assert response.headers["ratelimit-policy"] == '"api_key";q=3;w=18, "subnet";q=5;w=3'
    assert response.headers["ratelimit"] == '"api_key";r=2;t=6, "subnet";r=4;t=1'
    assert response.headers["x-ratelimit-limit-requests"] == "3"
    assert response.headers["x-ratelimit-remaining-requests"] == "2"
    assert response.headers["x-ratelimit-reset-requests"] == "6s"
    assert response.headers["x-seen-action"] == "allow"
    await app.shutdown()


async def test_route_without_headers_option_sends_only_the_request_id(tmp_path: Path, clock):
    app = build(tmp_path, clock)
    async with client(app) as http:
        response = await http.get("/page")
    assert response.status_code == 200
    assert "guardrail-request-id" in response.headers
    assert "ratelimit" not in response.headers
    await app.shutdown()


async def test_limit_is_a_429_exactly_as_the_contract(tmp_path: Path, clock):
    app = build(tmp_path, clock)
    async with client(app) as http:
        for _ in range(3):
            assert (
                await http.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))
            ).status_code == 200
        response = await http.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "6"  # 10/minute: one unit every 6 s
    assert response.headers["guardrail-action"] == "limit"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-ratelimit-reset-requests"] == "6s"
    assert '"api_key";r=0;t=6' in response.headers["ratelimit"]
    body = response.json()
    assert body["type"] == "quota-exceeded"
    assert body["status"] == 429
    assert body["retry_after"] == 6
    assert body["request_id"] == response.headers["guardrail-request-id"]
    assert body["error"]["type"] == body["error"]["code"] == "rate_limit_exceeded"
    assert "10/minute per api key" in body["error"]["message"]
    await app.shutdown()

    records = audit_records(tmp_path)
    assert [r["action"] for r in records] == ["limit"]
    record = records[0]
    assert record["status"] == 429
    assert record["route"] == "inference"
    assert record["limit"] == {
        "per": "api_key",
        "rate": "10/minute",
        "remaining": 0,
        "retry_after": 6,
    }
    assert record["subject"]["api_key"] == hash_key(SECRET.encode(), "sk-a")
    assert record["subject"]["ip"] == "203.0.113.7"
    assert record["subject"]["subnet"] == "203.0.113.0/24"
    assert record["policy"].startswith("sha256:")
    assert record["prev"].startswith("sha256:")
    assert record["ts"] == "2027-01-15T08:00:00.000Z"


async def test_bucket_refills_with_the_injected_clock(tmp_path: Path, clock):
    app = build(tmp_path, clock)
    async with client(app) as http:
        statuses = [(await http.get("/page")).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        clock.advance(1.0)  # 60/minute: one request back each second
        assert (await http.get("/page")).status_code == 200
        assert (await http.get("/page")).status_code == 429
    await app.shutdown()


async def test_a_refusal_by_one_bucket_consumes_from_none(tmp_path: Path, clock):
    app = build(tmp_path, clock)
    async with client(app) as http:
        # Five different keys fill the subnet bucket (burst 5) ...
        for i in range(5):
            ok = await http.post("/v1/chat/completions", json=CHAT, headers=bearer(f"sk-{i}"))
            assert ok.status_code == 200
        # ... so key sk-0's request is refused by the subnet, and its own bucket is not charged.
        refused = await http.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-0"))
        assert refused.status_code == 429
        assert '"api_key";r=2' in refused.headers["ratelimit"]
    await app.shutdown()


async def test_observe_mode_decides_and_audits_but_never_interferes(tmp_path: Path, clock):
    app = build(tmp_path, clock, POLICY.replace("version: 1", "version: 1\nmode: observe"))
    async with client(app) as http:
        responses = [await http.get("/page") for _ in range(4)]
    assert [r.status_code for r in responses] == [200] * 4
    assert all("ratelimit" not in r.headers for r in responses)
    assert [r.json()["action"] for r in responses] == ["allow", "allow", "limit", "limit"]
    await app.shutdown()
    records = audit_records(tmp_path)
    assert [(r["action"], r["status"], r["mode"]) for r in records] == [
        ("limit", 200, "observe")
    ] * 2


async def test_exempt_route_is_never_limited_nor_audited(tmp_path: Path, clock):
    app = build(tmp_path, clock)
    async with client(app) as http:
        responses = [await http.get("/healthz") for _ in range(10)]
    assert {r.status_code for r in responses} == {200}
    assert all("ratelimit" not in r.headers for r in responses)
    # SPEC 3: every response that passes through guardrail carries its request id.
    assert len({r.headers["guardrail-request-id"] for r in responses}) == 10
    await app.shutdown()
    assert audit_records(tmp_path) == []


async def test_decision_is_exposed_in_scope_state(tmp_path: Path, clock):
    app = build(tmp_path, clock)
    # through the trusted proxy: the account header is read from no one else
    async with client(app, peer="10.0.0.1") as http:
        headers = {"x-account-id": "acct-42", "x-forwarded-for": "203.0.113.7", **bearer("sk-z")}
        response = await http.get("/page", headers=headers)
    data = response.json()
    assert data["action"] == "allow"
    assert data["tier"] is None
    assert data["score"] == 0.0
    assert data["request_id"] == response.headers["guardrail-request-id"]
    assert data["subject"] == {
        "api_key": hash_key(SECRET.encode(), "sk-z"),
        "account": "acct-42",
        "ip": "203.0.113.7",
        "subnet": "203.0.113.0/24",
    }
    await app.shutdown()


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path: Path, clock):
    app = build(tmp_path, clock)
    async with client(app, peer="203.0.113.7") as http:
        spoofed = [
            await http.get("/page", headers={"x-forwarded-for": f"198.51.100.{i}"})
            for i in range(3)
        ]
    # Every request is the peer's: the third is limited although each claimed another address.
    assert [r.status_code for r in spoofed] == [200, 200, 429]
    assert spoofed[0].json()["subject"]["ip"] == "203.0.113.7"
    await app.shutdown()


async def test_ipv6_clients_of_one_64_share_their_per_ip_limit(tmp_path: Path, clock):
    app = build(tmp_path, clock)
    peers = ["2001:db8:1:2::1", "2001:db8:1:2:aaaa::2", "2001:db8:1:2:ffff::3", "2001:db8:1:3::1"]
    responses = []
    for peer in peers:
        async with client(app, peer=peer) as http:
            responses.append(await http.get("/page"))
    # burst 2 a /64: the third address of 2001:db8:1:2::/64 is limited, the next /64 is not
    assert [r.status_code for r in responses] == [200, 200, 429, 200]
    assert responses[1].json()["subject"]["ip"] == "2001:db8:1:2:aaaa::2"  # audit: the address
    await app.shutdown()


async def test_forwarded_for_from_a_trusted_proxy_is_honoured(tmp_path: Path, clock):
    app = build(tmp_path, clock)
    async with client(app, peer="10.0.0.1") as http:
        responses = [
            await http.get("/page", headers={"x-forwarded-for": f"198.51.100.{i}"})
            for i in range(3)
        ]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert responses[2].json()["subject"]["ip"] == "198.51.100.2"
    await app.shutdown()


async def test_request_without_api_key_is_limited_by_address(tmp_path: Path, clock):
    app = build(tmp_path, clock)
    async with client(app) as http:
        statuses = [
            (await http.post("/v1/chat/completions", json=CHAT)).status_code for _ in range(4)
        ]
    assert statuses == [200, 200, 200, 429]
    await app.shutdown()


async def chunked_receive(chunks: list[bytes]) -> Any:
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive


@pytest.mark.parametrize(
    "chunks",
    [
        [json.dumps(CHAT).encode()],
        [b'{"model": "m", "mess', b'ages": [{"role": "user", ', b'"content": "hi"}]}'],
        [b"x" * 700, b"y" * 700, b"z" * 10],  # larger than inspect_max_bytes (1 KB)
        [b"{not json"],
        [b"", b""],
    ],
)
async def test_inspected_body_is_replayed_byte_for_byte(tmp_path: Path, clock, chunks):
    seen: list[Message] = []

    async def recorder(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            seen.append(message)
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = build(tmp_path, clock, app=recorder)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [],
        "client": ("203.0.113.7", 1),
        "query_string": b"",
    }
    await app(scope, await chunked_receive(list(chunks)), send)
    assert [m["body"] for m in seen] == chunks
    assert [m["more_body"] for m in seen] == [i < len(chunks) - 1 for i in range(len(chunks))]
    assert sent[0]["status"] == 204
    request = scope["state"]["guardrail"].request  # type: ignore[index]
    if chunks[0].startswith(b'{"model"'):
        assert request is not None and request.model == "m"
    else:
        assert request is None
    await app.shutdown()


async def test_malformed_json_reaches_the_app_which_answers_4xx(tmp_path: Path, clock):
    from examples.openai_server import build_app

    app = build(tmp_path, clock, app=build_app())
    async with client(app) as http:
        response = await http.post(
            "/v1/chat/completions", content=b"{oops", headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_body"
    await app.shutdown()


async def test_other_scopes_pass_first_and_lifespan_starts_and_stops_guardrail(tmp_path, clock):
    seen: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    app = build(tmp_path, clock, app=inner)
    await app({"type": "custom.protocol"}, None, None)  # type: ignore[arg-type]
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    outgoing: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        outgoing.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert seen == ["custom.protocol", "lifespan"]
    assert [m["type"] for m in outgoing] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert app.audit.closed


async def test_websocket_handshake_counts_as_a_request(tmp_path: Path, clock):
    accepted: list[bool] = []

    async def ws_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        accepted.append(True)
        await send({"type": "websocket.close", "code": 1000})

    app = build(tmp_path, clock, app=ws_app)
    closes: list[Message] = []
    for _ in range(3):

        async def receive() -> Message:
            return {"type": "websocket.connect"}

        async def send(message: Message) -> None:
            closes.append(message)

        await app(
            {"type": "websocket", "path": "/ws", "headers": [], "client": ("203.0.113.7", 1)},
            receive,
            send,
        )
    assert len(accepted) == 2
    assert closes[-1] == {"type": "websocket.close", "code": 1008, "reason": "rate limit exceeded"}
    await app.shutdown()
    assert [r["action"] for r in audit_records(tmp_path)] == ["limit"]


async def test_add_middleware_on_fastapi(tmp_path: Path, clock, monkeypatch):
    policy_file = tmp_path / "guardrail.yaml"
    policy_file.write_text(POLICY)
    api = FastAPI()

    @api.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    api.add_middleware(
        Guardrail, policy=str(policy_file), clock=clock, audit=f"file://{tmp_path / 'audit.jsonl'}"
    )
    async with lifespan(api), client(api) as http:
        statuses = [(await http.get("/hello")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert len(audit_records(tmp_path)) == 1  # lifespan shutdown flushed the trail


async def test_app_exception_is_recorded_and_propagates(tmp_path: Path, clock):
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("model crashed")

    app = build(tmp_path, clock, POLICY + "audit: {sample_allowed: 1.0}\n", app=broken)
    with pytest.raises(RuntimeError):
        await app(
            {
                "type": "http",
                "method": "GET",
                "path": "/x",
                "headers": [],
                "client": ("203.0.113.7", 1),
            },
            None,
            None,
        )  # type: ignore[arg-type]
    await app.shutdown()
    assert [(r["action"], r["status"]) for r in audit_records(tmp_path)] == [("allow", 500)]


async def test_sample_allowed_records_plain_allows(tmp_path: Path, clock):
    app = build(tmp_path, clock, POLICY + "audit: {sample_allowed: 1.0}\n")
    async with client(app) as http:
        await http.get("/page")
    await app.shutdown()
    assert [(r["action"], r["status"]) for r in audit_records(tmp_path)] == [("allow", 200)]


def test_policy_argument_accepts_a_path_or_a_policy(tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    assert Guardrail(echo_app(), policy=path).policy.digest == Policy.from_string(POLICY).digest


async def test_response_streams_through_unbuffered_via_asgi(tmp_path: Path, clock):
    # The app's messages reach the server one by one, interleaved with the app's own progress.
    events: list[str] = []

    async def streamer(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            events.append(f"app:{i}")
            await send(
                {
                    "type": "http.response.body",
                    "body": f"data: {i}\n\n".encode(),
                    "more_body": i < 2,
                }
            )

    app = build(tmp_path, clock, app=streamer)

    async def send(message: Message) -> None:
        events.append(
            message["type"].rsplit(".", 1)[-1]
            + (f":{message['body'].decode().strip()}" if "body" in message else "")
        )

    await app(
        {
            "type": "http",
            "method": "GET",
            "path": "/s",
            "headers": [],
            "client": ("203.0.113.7", 1),
        },
        None,
        send,
    )  # type: ignore[arg-type]
    assert events == [
        "start",
        "app:0",
        "body:data: 0",
        "app:1",
        "body:data: 1",
        "app:2",
        "body:data: 2",
    ]
    await app.shutdown()


@pytest.mark.parametrize("behaviour", ["raises", "returns"])
async def test_app_without_lifespan_support_still_gets_guardrail_started_and_flushed(
    tmp_path: Path, clock, behaviour: str
):
    async def no_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            if behaviour == "raises":
                raise RuntimeError("lifespan not supported")
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = build(tmp_path, clock, app=no_lifespan)
    async with lifespan(app), client(app) as http:
        statuses = [(await http.get("/x")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert app.audit.closed
    assert [r["action"] for r in audit_records(tmp_path)] == ["limit"]


async def test_deeply_nested_json_is_limited_like_any_request_never_a_500(tmp_path: Path, clock):
    app = build(
        tmp_path, clock, POLICY.replace("inspect_max_bytes: 1KB", "inspect_max_bytes: 200KB")
    )
    body = b"[" * 100_000  # under inspect_max_bytes; json.loads raises RecursionError on it
    async with client(app) as http:
        statuses = [
            (await http.post("/v1/chat/completions", content=body, headers=bearer("sk-deep")))
            for _ in range(4)
        ]
    await app.shutdown()
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    assert statuses[0].content == body  # replayed to the app unchanged


def test_parse_request_survives_what_json_cannot_parse():
    from guardrail.inspection import parse_request

    with pytest.raises(RecursionError):
        json.loads(b"[" * 100_000)
    assert parse_request(b"[" * 100_000) is None
    assert parse_request(b"\xff\xfe") is None
    assert parse_request(b"[1, 2]") is None


def test_parse_request_reads_what_python_json_reads_and_orjson_refuses():
    from guardrail.inspection import parse_request

    surrogate = b'{"messages": [{"role": "user", "content": "think step by step \\udc80"}]}'
    nan = b'{"prompt": "show your reasoning", "temperature": NaN}'
    big = b'{"prompt": "hello", "max_tokens": 123456789012345678901234567890}'
    for raw in (surrogate, nan, big):
        request = parse_request(raw)
        assert request is not None and request.prompt
    assert parse_request(surrogate).prompt.endswith("\udc80")  # type: ignore[union-attr]
    assert parse_request(big).max_tokens is None  # type: ignore[union-attr]


async def test_observe_mode_with_fail_closed_still_serves_when_the_store_is_down(
    tmp_path: Path, clock
):
    from redis_servers import free_port

    policy = POLICY.replace(
        "version: 1", "version: 1\nmode: observe\non_storage_error: fail_closed"
    )
    app = build(tmp_path, clock, policy, storage=f"redis://127.0.0.1:{free_port()}/0?timeout=0.2")
    async with client(app) as http:
        response = await http.get("/page")
    await app.shutdown()
    assert response.status_code == 200
    [record] = audit_records(tmp_path)
    assert (record["action"], record["status"], record["storage_error"]) == ("limit", 200, True)


async def test_first_request_cancelled_during_startup_does_not_leave_guardrail_unstarted(
    tmp_path: Path, clock
):
    import asyncio

    app = build(tmp_path, clock)
    gate = asyncio.Event()
    real_start = app.audit.start

    async def slow_start() -> None:
        await gate.wait()
        await real_start()

    app.audit.start = slow_start  # type: ignore[method-assign]
    first = asyncio.ensure_future(app.startup())
    await asyncio.sleep(0)
    first.cancel()  # the first request's client went away while guardrail was starting
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    async with client(app) as http:
        for _ in range(3):
            await http.get("/page")
    await app.shutdown()
    assert [r["action"] for r in audit_records(tmp_path)] == ["limit"]


async def test_failed_app_startup_releases_guardrail(tmp_path: Path, clock):
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.failed", "message": "no model"})

    app = build(tmp_path, clock, app=failing)
    incoming = [{"type": "lifespan.startup"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert sent == [{"type": "lifespan.startup.failed", "message": "no model"}]
    assert app.audit.closed


def asgi_post(path: str = "/v1/chat/completions", key: str = "sk-a") -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"100000"),
        ],
        "client": ("203.0.113.7", 1),
        "query_string": b"",
    }


async def unread() -> Message:
    raise AssertionError("the body was read")


async def test_a_subject_over_a_limit_is_refused_before_its_body_is_read(tmp_path: Path, clock):
    app = build(tmp_path, clock)
    async with client(app) as http:
        for _ in range(3):
            await http.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))
        told = await http.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))
    assert told.status_code == 429  # the storage's refusal: learnt
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    clock.advance(1.0)
    await app(asgi_post(), unread, send)
    assert sent[0]["status"] == 429
    headers = dict(sent[0]["headers"])
    # as the storage would say it a second later: one unit back in 5 s
    assert headers[b"retry-after"] == b"5"
    assert headers[b"x-ratelimit-remaining-requests"] == b"0"
    assert headers[b"x-ratelimit-reset-requests"] == b"5s"
    assert headers[b"ratelimit-policy"] == told.headers["ratelimit-policy"].encode()
    assert headers[b"connection"] == b"close"  # its body unread: the connection is let go
    assert json.loads(sent[1]["body"])["error"]["code"] == "rate_limit_exceeded"
    clock.advance(5.0)  # the bucket has room again: the request is decided the usual way
    async with client(app) as http:
        again = await http.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))
        other = await http.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-b"))
    assert again.status_code == other.status_code == 200
    assert "connection" not in again.headers and "connection" not in other.headers
    await app.shutdown()
    records = audit_records(tmp_path)
    assert [(r["action"], r["status"]) for r in records] == [("limit", 429)] * 2
    assert records[1]["limit"] == {**records[0]["limit"], "retry_after": 5}


async def test_observe_mode_learns_nothing_to_refuse_early(tmp_path: Path, clock):
    app = build(tmp_path, clock, POLICY.replace("version: 1", "version: 1\nmode: observe"))
    async with client(app) as http:
        for _ in range(5):
            response = await http.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))
            assert response.status_code == 200 and response.json() == CHAT  # read, replayed
    assert len(app.refused) == 0
    await app.shutdown()


async def test_a_body_past_its_deadline_is_answered_408_and_audited(tmp_path: Path, clock):
    called = []

    async def never(scope: Scope, receive: Receive, send: Send) -> None:
        called.append(scope)

    app = build(tmp_path, clock, app=never)
    await app.startup()  # the audit file opens in a thread: not within a few loop turns
    release = asyncio.Event()

    async def receive() -> Message:
        await release.wait()
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    request = asyncio.create_task(app(asgi_post(), receive, send))
    for _ in range(10):  # until the request waits for its body
        await asyncio.sleep(0)
    app.deadlines.sweep(time.monotonic() + 10.0)  # the route's inspect_timeout (default 10 s)
    await request
    assert not called
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    problem = json.loads(sent[1]["body"])
    assert problem["type"] == "request-timeout"
    assert "10 seconds" in problem["detail"]
    await app.shutdown()
    assert [(r["action"], r["status"]) for r in audit_records(tmp_path)] == [("timeout", 408)]


async def test_observe_mode_lets_a_late_body_reach_the_app(tmp_path: Path, clock):
    app = build(tmp_path, clock, POLICY.replace("version: 1", "version: 1\nmode: observe"))
    release = asyncio.Event()
    raw = json.dumps(CHAT).encode()
    messages = [{"type": "http.request", "body": raw[:10], "more_body": True}]

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        await release.wait()
        return {"type": "http.request", "body": raw[10:], "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    request = asyncio.create_task(app(asgi_post(), receive, send))
    for _ in range(10):
        await asyncio.sleep(0)
    app.deadlines.sweep(time.monotonic() + 10.0)
    for _ in range(10):
        await asyncio.sleep(0)
    release.set()  # the rest arrives late: the app reads it as it would without guardrail
    await request
    assert sent[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in sent[1:]) == raw
    await app.shutdown()


async def stalled_post(app: Guardrail) -> list[Message]:
    """One request whose body never arrives, past its route's deadline: what was sent."""
    release = asyncio.Event()

    async def receive() -> Message:
        await release.wait()
        raise AssertionError("never released")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    request = asyncio.create_task(app(asgi_post(), receive, send))
    for _ in range(100):  # until the request waits for its body (or was answered without it)
        await asyncio.sleep(0)
        if request.done():
            break
        app.deadlines.sweep(time.monotonic() + 10.0)  # a no-op until the wait is watched
    await request
    return sent


async def test_a_body_that_never_arrives_costs_its_request_buckets(tmp_path: Path, clock):
    app = build(tmp_path, clock)  # inference: per api_key, burst 3
    await app.startup()  # the audit file opens in a thread: not within a few loop turns
    statuses = [(await stalled_post(app))[0]["status"] for _ in range(4)]
    assert statuses == [408] * 4  # the fourth refused by the storage: its refusal learnt
    sent = await stalled_post(app)  # answered before its body: no deadline swept
    assert sent[0]["status"] == 429 and (b"connection", b"close") in sent[0]["headers"]
    async with client(app) as http:  # nor is a whole request of that key admitted
        assert (
            await http.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))
        ).status_code == 429
    await app.shutdown()
    records = audit_records(tmp_path)
    assert sum(r.get("repeated", 1) for r in records) == 6
    timeouts = [r for r in records if r["action"] == "timeout"]
    assert timeouts[0]["limit"]["remaining"] == 2  # charged, admitted
    assert any(r["limit"]["retry_after"] > 0 for r in timeouts)  # the refused one, as said


async def test_a_body_that_never_arrives_with_the_store_down_is_still_a_408(tmp_path: Path, clock):
    from redis_servers import free_port

    policy = POLICY.replace("version: 1", "version: 1\non_storage_error: fail_closed")
    app = build(tmp_path, clock, policy, storage=f"redis://127.0.0.1:{free_port()}/0?timeout=0.2")
    await app.startup()
    sent = await stalled_post(app)
    assert sent[0]["status"] == 408
    assert len(app.refused) == 0  # nothing the storage said: nothing learnt
    await app.shutdown()
    assert [(r["action"], r["status"]) for r in audit_records(tmp_path)] == [("timeout", 408)]


async def test_the_app_reads_the_inspected_body_without_a_risk_engine(tmp_path: Path, clock):
    # Nothing on guardrail's side reads it here (no thresholds, no token limit): it is parsed
    # when the app first asks, and reads as it always did.
    seen: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        decision = scope["state"]["guardrail"]
        seen.append((decision.request, decision.request))  # the second read: the same one
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guardrail = build(tmp_path, clock, app=app)
    async with client(guardrail) as http:
        body = {**CHAT, "max_tokens": 7, "stream": True}
        response = await http.post("/v1/chat/completions", json=body, headers=bearer("sk-a"))
        refused = await http.post("/v1/chat/completions", content=b"[1, 2]", headers=bearer("sk-a"))
    assert response.status_code == refused.status_code == 200
    (first, again), (unparsable, _) = seen
    assert first is again
    assert (first.model, first.stream, first.max_tokens, first.prompt) == (
        "m",
        True,
        7,
        "hello there",
    )
    assert first.body == body
    assert unparsable is None  # not a JSON object: the app answers it, as before
    await guardrail.shutdown()
