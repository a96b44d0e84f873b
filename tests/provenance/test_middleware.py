"""Provenance through the middleware: every response of a provenance route is recorded with a
receipt of the body as the client got it, its text sketched under the right subject, and the
body itself untouched."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from guardrail.cli import main
from guardrail.provenance.index import ProvenanceIndex
from guardrail.simulate import leaks
from test_budgets import policy as budget_policy

from helpers import audit_records, build, client, lifespan
from redis_servers import free_port

POLICY = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
identity:
  api_key: {header: authorization}
  account: {header: x-account-id}
  client_ip: {trusted_proxies: [203.0.113.7]}  # the test client: it sets the account
routes:
  - name: chat
    match: {path: "/v1/chat/completions$", methods: [POST]}
    inspect: openai
    inspect_max_bytes: 64KB
    limits:
      - {per: ip, rate: 1000000/minute}
  - name: other
    match: {path: /}
provenance:
  enabled: true
  path: "PATH/prov-{worker}.grprov"
"""
#: The same policy without provenance: what the client gets must not differ.
PLAIN = POLICY.partition("provenance:")[0]


def policy(tmp_path: Path, text: str = POLICY) -> str:
    return text.replace("PATH", str(tmp_path))


def completion(text: str) -> bytes:
    choice = {"index": 0, "message": {"role": "assistant", "content": text}}
    return json.dumps({"object": "chat.completion", "choices": [choice]}).encode()


def events(text: str) -> list[bytes]:
    words = text.split(" ")
    out = [
        b"data: "
        + json.dumps({"choices": [{"index": 0, "delta": {"content": w + " "}}]}).encode()
        + b"\n\n"
        for w in words
    ]
    return [*out, b"data: [DONE]\n\n"]


def model_app() -> Starlette:
    """Serves the user's message back as the answer, in the shape the request asks for."""

    async def chat(request: Request) -> Response:
        body = await request.json()
        text = body["messages"][-1]["content"]
        shape = body.get("shape", "json")
        if shape == "sse":

            async def stream() -> AsyncIterator[bytes]:
                for event in events(text):
                    yield event

            return StreamingResponse(stream(), media_type="text/event-stream")
        if shape == "gzip":
            return Response(
                gzip.compress(completion(text)),
                media_type="application/json",
                headers={"content-encoding": "gzip"},
            )
        if shape == "malformed":
            return Response(completion(text)[:-7], media_type="application/json")
        if shape == "text":
            return Response(text, media_type="text/plain")
        return Response(completion(text), media_type="application/json")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def ask(text: str, shape: str = "json") -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}], "shape": shape}


ALICE = leaks.LeakAccount("campaign-a", 0, 40)
OTHERS = [leaks.LeakAccount("benign", i, 20) for i in range(4)]


async def serve_all(
    http: httpx.AsyncClient, served: list[tuple[str, leaks.LeakAccount]]
) -> list[bytes]:
    bodies = []
    for number, (name, account) in enumerate(served):
        shape = "sse" if number % 2 else "json"
        for text in leaks.outputs(9, account):
            response = await http.post(
                "/v1/chat/completions", json=ask(text, shape), headers={"x-account-id": name}
            )
            assert response.status_code == 200
            bodies.append(response.content)
    return bodies


async def test_each_response_is_sketched_under_its_subject_and_traced_back(
    tmp_path: Path, clock, capsys
):
    app = build(tmp_path, clock, policy(tmp_path), app=model_app())
    accounts = [("alice", ALICE), *((f"user{i}", a) for i, a in enumerate(OTHERS))]
    async with lifespan(app), client(app) as http:
        await serve_all(http, accounts)
    index = ProvenanceIndex.load(tmp_path / "prov-0.grprov")  # saved at shutdown
    expected = {f"a:{name}": account.responses for name, account in accounts}
    assert index.subjects_entries() == expected
    records = audit_records(tmp_path)
    assert len(records) == sum(expected.values())  # allowed responses, every one recorded
    assert all(r["action"] == "allow" and r["receipt"]["bytes"] > 0 for r in records)

    rng = random.Random(4)
    sample = rng.sample(list(leaks.outputs(9, ALICE)), 20)
    leak = tmp_path / "leak.jsonl"
    leak.write_text("".join(json.dumps({"text": leaks.perturb(t, rng)}) + "\n" for t in sample))
    found = ["trace", "find", str(leak), "--index", str(tmp_path / "prov-*.grprov"), "--json"]
    assert main(found) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["named"] == ["a:alice"]
    assert result["index"]["files"] == [str(tmp_path / "prov-0.grprov")]


async def test_bodies_are_byte_identical_with_and_without_provenance_and_receipts_match(
    tmp_path: Path, clock
):
    texts = list(leaks.outputs(9, OTHERS[0]))[:4]
    requests = [ask(t, shape) for t in texts for shape in ("json", "sse")]
    got: dict[str, list[bytes]] = {}
    for name, text in (("on", policy(tmp_path)), ("off", PLAIN)):
        folder = tmp_path / name
        folder.mkdir()
        app = build(folder, clock, text, app=model_app())
        async with lifespan(app), client(app) as http:
            got[name] = []
            for body in requests:
                response = await http.post(
                    "/v1/chat/completions", json=body, headers={"x-account-id": "bob"}
                )
                got[name].append(response.content)
    assert got["on"] == got["off"]
    assert got["on"][1] == b"".join(events(texts[0]))  # the stream as the app sent it
    receipts = [r["receipt"] for r in audit_records(tmp_path / "on")]
    assert receipts == [
        {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)} for b in got["on"]
    ]
    assert not [r for r in audit_records(tmp_path / "off") if "receipt" in r]


async def test_the_subject_is_the_principal_the_audit_record_names(tmp_path: Path, clock):
    app = build(tmp_path, clock, policy(tmp_path), app=model_app())
    text = next(iter(leaks.outputs(9, OTHERS[1])))
    async with lifespan(app), client(app) as http:
        headers = {"authorization": "Bearer sk-live-abc"}
        response = await http.post("/v1/chat/completions", json=ask(text), headers=headers)
        assert response.status_code == 200
    (record,) = audit_records(tmp_path)
    assert record["subject"]["api_key"].startswith("k:")
    assert "sk-live-abc" not in json.dumps(record)
    index = ProvenanceIndex.load(tmp_path / "prov-0.grprov")
    assert index.subjects_entries() == {record["subject"]["api_key"]: 1}


async def test_compressed_malformed_and_plain_bodies_are_served_and_recorded_not_sketched(
    tmp_path: Path, clock
):
    app = build(tmp_path, clock, policy(tmp_path), app=model_app())
    text = next(iter(leaks.outputs(9, OTHERS[2])))
    got = []
    async with lifespan(app), client(app) as http:
        for shape in ("gzip", "malformed", "text"):
            response = await http.post(
                "/v1/chat/completions",
                json=ask(text, shape),
                headers={"x-account-id": "eve", "accept-encoding": "identity"},
            )
            assert response.status_code == 200
            got.append(response.content)  # httpx decodes the gzip one
    assert got == [completion(text), completion(text)[:-7], text.encode()]
    assert not (tmp_path / "prov-0.grprov").exists()  # nothing sketched, nothing to save
    records = audit_records(tmp_path)
    assert [r["status"] for r in records] == [200, 200, 200]
    raw = gzip.compress(completion(text))
    assert records[0]["receipt"]["bytes"] == len(raw)  # the compressed bytes, as served
    assert records[2]["receipt"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()


async def test_a_route_without_provenance_is_neither_wrapped_nor_recorded(tmp_path: Path, clock):
    text = policy(tmp_path).replace("provenance:\n", "provenance:\n  routes: [other]\n")
    app = build(tmp_path, clock, text, app=model_app())
    answer = next(iter(leaks.outputs(9, OTHERS[3])))
    async with lifespan(app), client(app) as http:
        response = await http.post("/v1/chat/completions", json=ask(answer))
        assert response.status_code == 200
    assert audit_records(tmp_path) == []  # a plain allow, not sampled
    assert not (tmp_path / "prov-0.grprov").exists()  # nothing to save


async def test_a_stream_still_streams_through_a_real_server_with_provenance(tmp_path: Path, clock):
    release = asyncio.Event()
    produced: list[str] = []
    text = list(leaks.outputs(9, OTHERS[0]))[1]
    first, *rest = events(text)

    async def stream() -> AsyncIterator[bytes]:
        produced.append("first")
        yield first
        await asyncio.wait_for(release.wait(), timeout=10)
        produced.append("rest")
        for event in rest:
            yield event

    async def chat(request: Request) -> StreamingResponse:
        await request.body()
        return StreamingResponse(stream(), media_type="text/event-stream")

    model = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    app = build(tmp_path, clock, policy(tmp_path), app=model)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 (uvicorn exposes no startup event)
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        async with (
            httpx.AsyncClient() as http,
            http.stream("POST", url, json=ask(text, "sse")) as response,
        ):
            chunks = response.aiter_raw()
            assert await anext(chunks) == first
            assert produced == ["first"]  # the app has not produced the rest yet
            release.set()
            received = first + b"".join([chunk async for chunk in chunks])
    finally:
        server.should_exit = True
        await serving
    (record,) = audit_records(tmp_path)
    assert record["receipt"] == {
        "sha256": hashlib.sha256(received).hexdigest(),
        "bytes": len(received),
    }
    assert len(ProvenanceIndex.load(tmp_path / "prov-0.grprov")) == 1


async def test_a_stream_its_budget_cuts_is_receipted_and_sketched_as_the_client_got_it(
    tmp_path: Path, clock
):
    text = " ".join(f"word{i}" for i in range(210))
    pieces = events(text)  # 210 deltas, one token each; the budget holds 100

    async def chat(request: Request) -> StreamingResponse:
        await request.body()
        return StreamingResponse(iter(pieces), media_type="text/event-stream")

    model = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    provenance = f"provenance: {{enabled: true, path: '{tmp_path}/prov-{{worker}}.grprov'}}"
    text_policy = budget_policy(burst=100, default_max_tokens=20, extra=provenance)
    app = build(tmp_path, clock, text_policy, app=model)
    async with lifespan(app), client(app) as http:
        response = await http.post(
            "/v1/chat/completions", json=ask("q"), headers={"authorization": "Bearer sk-1"}
        )
    received = response.content
    assert b'"error"' in received and received.endswith(b"data: [DONE]\n\n")  # cut
    assert len(received) < len(b"".join(pieces))
    (record,) = audit_records(tmp_path)
    assert record["action"] == "limit"
    assert record["receipt"] == {
        "sha256": hashlib.sha256(received).hexdigest(),
        "bytes": len(received),
    }
    index = ProvenanceIndex.load(tmp_path / "prov-0.grprov")
    _, _, sketch = index.entry(0)
    served = "".join(
        json.loads(line[6:])["choices"][0]["delta"]["content"]
        for line in received.decode().split("\n\n")
        if line.startswith("data: {") and '"choices"' in line
    )
    assert served.split() == text.split()[: len(served.split())] != text.split()
    assert sketch == index.sketcher.sketch(served) != index.sketcher.sketch(text)


async def test_without_lifespan_the_index_is_saved_as_the_process_ends(tmp_path: Path, clock):
    app = build(tmp_path, clock, policy(tmp_path), app=model_app())
    text = next(iter(leaks.outputs(9, OTHERS[1])))
    async with client(app) as http:  # no lifespan: started by the first request
        response = await http.post("/v1/chat/completions", json=ask(text, "sse"))
        assert response.status_code == 200
    app.audit.exit_sync()  # what the process's end does (guardrail.audit.at_exit)
    index = ProvenanceIndex.load(tmp_path / "prov-0.grprov")
    assert index.subjects_entries() == {"i:203.0.113.7": 1}
    assert [r["receipt"]["bytes"] for r in audit_records(tmp_path)] == [len(response.content)]


async def test_in_observe_mode_served_refusals_keep_their_receipts(tmp_path: Path, clock):
    text = policy(tmp_path).replace("version: 1\n", "version: 1\nmode: observe\n")
    text = text.replace("{per: ip, rate: 1000000/minute}", "{per: ip, rate: 1/hour}")
    app = build(tmp_path, clock, text, app=model_app())
    answer = next(iter(leaks.outputs(9, OTHERS[2])))
    async with lifespan(app), client(app) as http:
        bodies = []
        for _ in range(4):  # the last three over the limit: limit recorded, still served
            response = await http.post("/v1/chat/completions", json=ask(answer))
            assert response.status_code == 200
            bodies.append(response.content)
    records = audit_records(tmp_path)
    assert [r["action"] for r in records] == ["allow", "limit", "limit", "limit"]
    assert [r["receipt"]["sha256"] for r in records] == [
        hashlib.sha256(b).hexdigest() for b in bodies
    ]
    assert len(ProvenanceIndex.load(tmp_path / "prov-0.grprov")) == 4


async def test_trace_receipt_verifies_what_the_client_received(tmp_path: Path, clock, capsys):
    app = build(tmp_path, clock, policy(tmp_path), app=model_app())
    text = next(iter(leaks.outputs(9, OTHERS[3])))
    async with lifespan(app), client(app) as http:
        response = await http.post(
            "/v1/chat/completions", json=ask(text, "sse"), headers={"x-account-id": "zoe"}
        )
    request_id = response.headers["guardrail-request-id"]
    served = tmp_path / "served.txt"
    served.write_bytes(response.content)
    trail = str(tmp_path / "audit.jsonl")
    argv = ["trace", "receipt", request_id, "--audit", trail, "--body", str(served), "--json"]
    assert main(argv) == 0
    statement = json.loads(capsys.readouterr().out)
    assert statement["receipt"] == {
        "sha256": hashlib.sha256(response.content).hexdigest(),
        "bytes": len(response.content),
    }
    served.write_bytes(response.content[:-1])  # not what was served
    assert main(argv[:-1]) == 1


async def test_a_signed_answer_is_receipted_and_sketched_as_the_client_got_it(
    tmp_path: Path, clock
):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    key = tmp_path / "signing.pem"
    pem = Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    key.write_bytes(pem)
    signed = policy(tmp_path) + f"  signatures: {{key: 'file:{key}', max_bytes: 64KB}}\n"
    app = build(tmp_path, clock, signed, app=model_app())
    text = next(iter(leaks.outputs(9, OTHERS[0])))
    async with lifespan(app), client(app) as http:
        response = await http.post(
            "/v1/chat/completions", json=ask(text), headers={"x-account-id": "sam"}
        )
    assert "signature" in response.headers and response.content == completion(text)
    (record,) = audit_records(tmp_path)
    assert record["receipt"]["sha256"] == hashlib.sha256(response.content).hexdigest()
    assert ProvenanceIndex.load(tmp_path / "prov-0.grprov").subjects_entries() == {"a:sam": 1}
