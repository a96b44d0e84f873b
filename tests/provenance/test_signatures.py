"""``provenance.signatures``: JSON responses signed (RFC 9421 over RFC 9530 Content-Digest,
Ed25519) and checked with http-message-signatures' own verifier; streams and everything else
pass untouched and unsigned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_public_key,
)
from http_message_signatures import (
    HTTPMessageVerifier,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from guardrail import Guardrail, Policy
from guardrail.cli import main
from guardrail.provenance.signatures import Headers
from guardrail.provenance.signatures import Response as SignedView

from helpers import bearer, client, lifespan

POLICY = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
routes:
  - name: api
    match: {{path: /}}
    limits:
      - {{per: api_key, rate: 100/minute}}
provenance:
  signatures:
    key: file:{key}
    max_bytes: 4KB
"""


@pytest.fixture
def policy(tmp_path: Path) -> str:
    pem = Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    key = tmp_path / "signing.pem"
    key.write_bytes(pem)
    text = POLICY.format(key=key)
    (tmp_path / "policy.yaml").write_text(text)
    return text


def json_app() -> Starlette:
    async def answer(request: Request) -> Response:
        return JSONResponse({"choices": [{"message": {"content": "a signed answer"}}]})

    async def big(request: Request) -> Response:
        return JSONResponse({"text": "x" * 10_000})

    async def text(request: Request) -> Response:
        return PlainTextResponse("plain")

    async def stream(request: Request) -> Response:
        async def chunks() -> Any:
            yield b'{"a":'
            yield b"1}"

        return StreamingResponse(chunks(), media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/answer", answer, methods=["POST", "GET"]),
            Route("/v1/big", big),
            Route("/v1/text", text),
            Route("/v1/stream", stream),
        ]
    )


def verifier(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> HTTPMessageVerifier:
    """The published key, as `guardrail trace public-key --pem` prints it."""
    assert main(["trace", "public-key", "--policy", str(tmp_path / "policy.yaml"), "--pem"]) == 0
    public = load_pem_public_key(capsys.readouterr().out.encode())
    assert main(["trace", "public-key", "--policy", str(tmp_path / "policy.yaml")]) == 0
    kid = json.loads(capsys.readouterr().out)["kid"]
    return HTTPMessageVerifier(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={kid: public}, private_keys={}),
    )


def view(response: httpx.Response, status: int | None = None) -> SignedView:
    return SignedView(status or response.status_code, Headers(response.headers.raw))


async def get(app: Guardrail, method: str, path: str) -> httpx.Response:
    async with lifespan(app), client(app) as http:
        return await http.request(method, path, headers=bearer("sk-alice"))


async def test_a_json_answer_is_signed_and_verifies(
    tmp_path: Path, policy: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app = Guardrail(json_app(), policy=Policy.from_string(policy), audit="stdout://")
    response = await get(app, "POST", "/v1/answer")
    capsys.readouterr()  # the audit lines
    assert response.status_code == 200
    assert response.headers["content-digest"].startswith("sha-256=:")
    (result,) = verifier(tmp_path, capsys).verify(view(response), body=response.content)
    covered = result.covered_components
    assert {'"@status"', '"content-type"', '"guardrail-request-id"', '"content-digest"'} <= set(
        covered
    )
    assert covered['"guardrail-request-id"'] == response.headers["guardrail-request-id"]
    assert result.body == response.content and result.label == "guardrail"
    assert app.signer is not None and (app.signer.signed, app.signer.unsigned) == (1, 0)


async def test_an_altered_body_or_status_does_not_verify(
    tmp_path: Path, policy: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app = Guardrail(json_app(), policy=Policy.from_string(policy), audit="stdout://")
    response = await get(app, "POST", "/v1/answer")
    capsys.readouterr()
    check = verifier(tmp_path, capsys)
    altered = response.content.replace(b"signed", b"forged")
    with pytest.raises(InvalidSignature):
        check.verify(view(response), body=altered)
    with pytest.raises(InvalidSignature):
        check.verify(view(response, status=201), body=response.content)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/big"), ("GET", "/v1/text"), ("GET", "/v1/stream")],
)
async def test_what_is_not_a_bounded_json_body_passes_unsigned(
    policy: str, method: str, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app = Guardrail(json_app(), policy=Policy.from_string(policy), audit="stdout://")
    bare = await get(Guardrail(json_app(), policy=Policy.from_string(policy)), method, path)
    response = await get(app, method, path)
    capsys.readouterr()
    assert response.status_code == 200 and response.content == bare.content
    assert "signature" not in response.headers and "content-digest" not in response.headers
    assert app.signer is not None and (app.signer.signed, app.signer.unsigned) == (0, 1)


async def test_a_stream_is_never_held(policy: str) -> None:
    """The client has chunk 1 before the app sends chunk 2: nothing is held for a stream."""
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"a":', "more_body": True})
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        await send({"type": "http.response.body", "body": b"1}"})

    guarded = Guardrail(app, policy=Policy.from_string(policy), audit="stdout://")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/stream",
        "raw_path": b"/v1/stream",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"authorization", b"Bearer sk-a")],
        "client": ("203.0.113.7", 1234),
        "server": ("testserver", 80),
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await guarded.startup()
    try:
        await guarded(scope, receive, send)
    finally:
        await guarded.shutdown()
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b'{"a":1}'


@pytest.mark.parametrize(
    ("bodies", "signed"),
    [
        ([b'{"a":', b"1}"], True),  # as declared, in two parts
        ([b""], False),  # a HEAD answer without its content: a digest of nothing is no digest of it
        ([b'{"a":1}', b"   "], False),  # more than declared
    ],
)
async def test_only_a_body_of_the_declared_length_is_signed(
    tmp_path: Path, policy: str, bodies: list[bytes], signed: bool
) -> None:
    signer = Guardrail(json_app(), policy=Policy.from_string(policy)).signer
    assert signer is not None
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    wrapped = signer.wrap(send)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"7")]
    await wrapped({"type": "http.response.start", "status": 200, "headers": headers})
    for n, body in enumerate(bodies):
        more = n < len(bodies) - 1
        await wrapped({"type": "http.response.body", "body": body, "more_body": more})
    names = [name for name, _ in sent[0]["headers"]]
    assert (b"signature" in names) is signed and (b"content-digest" in names) is signed
    assert [m.get("body") for m in sent[1:]] == bodies  # passed on as the app sent them
    assert (signer.signed, signer.unsigned) == ((1, 0) if signed else (0, 1))


def saved(tmp_path: Path, response: httpx.Response) -> tuple[Path, Path]:
    """The response as `curl -D headers.txt -o body.json` saves it."""
    headers = tmp_path / "headers.txt"
    lines = [f"HTTP/1.1 {response.status_code} OK"]
    lines += [f"{name.decode()}: {value.decode()}" for name, value in response.headers.raw]
    headers.write_bytes(("\r\n".join(lines) + "\r\n\r\n").encode())
    body = tmp_path / "body.json"
    body.write_bytes(response.content)
    return headers, body


async def test_verify_response_with_the_published_key(
    tmp_path: Path, policy: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app = Guardrail(json_app(), policy=Policy.from_string(policy), audit="stdout://")
    response = await get(app, "POST", "/v1/answer")
    headers, body = saved(tmp_path, response)
    assert main(["trace", "public-key", "--policy", str(tmp_path / "policy.yaml")]) == 0
    jwk = tmp_path / "key.jwk"
    jwk.write_text(capsys.readouterr().out)
    argv = ["trace", "verify-response", "--headers", str(headers), "--body", str(body)]
    assert main([*argv, "--public-key", str(jwk)]) == 0
    out = capsys.readouterr().out
    request_id = response.headers["guardrail-request-id"]
    assert out.startswith("VERIFIED: signed by guardrail-ed25519-")
    assert f"guardrail trace receipt {request_id} --audit" in out
    assert main([*argv, "--policy", str(tmp_path / "policy.yaml"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verified"] is True and data["request_id"] == request_id
    assert data["keyid"] == json.loads(jwk.read_text())["kid"]
    assert set(data["covered"]) == {
        '"@status"',
        '"content-type"',
        '"guardrail-request-id"',
        '"content-digest"',
    }
    body.write_bytes(response.content.replace(b"signed", b"forged"))
    assert main([*argv, "--public-key", str(jwk)]) == 1
    assert capsys.readouterr().out.startswith("NOT VERIFIED: ")
    headers.write_text("content-type: application/json\r\n")
    assert main([*argv, "--public-key", str(jwk)]) == 2
    assert "no HTTP status line" in capsys.readouterr().err
