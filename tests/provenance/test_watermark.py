"""``provenance.watermark``: a keyed seed per subject reaches the app, never the client's own,
and the audit trail says which key and principal it came from; ``guardrail trace seed``
recomputes it, both ways."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from guardrail import Guardrail, Policy
from guardrail.cli import main
from guardrail.identity import hash_key
from guardrail.provenance.watermark import Seeds, synthid_keys

from helpers import SECRET, audit_records, bearer, client, lifespan

WATERMARK_KEY = "watermark-key-0123456789abcdef0123"
HEADER = "x-guardrail-watermark-seed"

POLICY = f"""
version: 1
secret: env:GUARDRAIL_TEST_SECRET
identity:
  account: {{header: x-account-id}}  # read from the proxy in front
  client_ip: {{trusted_proxies: [10.0.0.1]}}
routes:
  - name: health
    match: {{path: /healthz}}
    exempt: true
  - name: chat
    match: {{path: "^/v1/chat/completions$", methods: [POST]}}
    limits:
      - {{per: api_key, rate: 100/minute}}
audit:
  sample_allowed: 1.0
provenance:
  watermark:
    key: env:GUARDRAIL_TEST_WATERMARK_KEY
    header: {HEADER}
"""


@pytest.fixture(autouse=True)
def _watermark_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAIL_TEST_WATERMARK_KEY", WATERMARK_KEY)


def seen_app() -> Starlette:
    """Answers with what it was given: the seed in state, and every value of the header."""

    async def show(request: Request) -> JSONResponse:
        decision = request.scope.get("state", {}).get("guardrail")
        return JSONResponse(
            {
                "state": None if decision is None else decision.watermark_seed,
                "headers": request.headers.getlist(HEADER),
            }
        )

    return Starlette(
        routes=[
            Route("/v1/chat/completions", show, methods=["POST"]),
            Route("/healthz", show),
            Route("/{rest:path}", show),
        ]
    )


def build(tmp_path: Path, policy: str = POLICY, audit: str = "audit.jsonl") -> Guardrail:
    return Guardrail(
        seen_app(), policy=Policy.from_string(policy), audit=f"file://{tmp_path / audit}"
    )


async def chat(app: Guardrail, headers: dict[str, str]) -> dict[str, Any]:
    peer = "10.0.0.1" if "x-account-id" in headers else "203.0.113.7"
    async with lifespan(app), client(app, peer) as http:
        response = await http.post("/v1/chat/completions", json={}, headers=headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def expected(principal: str) -> int:
    return Seeds(WATERMARK_KEY.encode()).seed(principal)


async def test_the_app_gets_the_subjects_seed_in_state_and_header(tmp_path: Path) -> None:
    seen = await chat(build(tmp_path), bearer("sk-alice"))
    principal = hash_key(SECRET.encode(), "sk-alice")
    assert principal.startswith("k:")
    assert seen == {"state": expected(principal), "headers": [str(expected(principal))]}
    assert 0 <= seen["state"] < 2**63


async def test_a_seed_the_client_sends_is_removed(tmp_path: Path) -> None:
    forged = {**bearer("sk-alice"), HEADER: "42"}
    seen = await chat(build(tmp_path), forged)
    assert seen["headers"] == [str(seen["state"])] and seen["state"] != 42
    # on an exempt route too, where guardrail gives none
    async with lifespan(app := build(tmp_path)), client(app) as http:
        response = await http.get("/healthz", headers={HEADER: "42"})
    assert response.json() == {"state": None, "headers": []}


async def test_two_subjects_two_seeds_and_an_account_over_its_keys(tmp_path: Path) -> None:
    alice = await chat(build(tmp_path), bearer("sk-alice"))
    bob = await chat(build(tmp_path), bearer("sk-bob"))
    assert alice["state"] != bob["state"]
    # the principal is the account when there is one: the same seed whichever key it uses
    one = await chat(build(tmp_path), {**bearer("sk-1"), "x-account-id": "acme"})
    two = await chat(build(tmp_path), {**bearer("sk-2"), "x-account-id": "acme"})
    assert one["state"] == two["state"] == expected("a:acme")
    # keyless: the client's address
    keyless = await chat(build(tmp_path), {})
    assert keyless["state"] == expected("i:203.0.113.7")


async def test_the_same_subject_keeps_its_seed_across_restarts(tmp_path: Path) -> None:
    first = await chat(build(tmp_path, audit="one.jsonl"), bearer("sk-alice"))
    again = await chat(build(tmp_path, audit="two.jsonl"), bearer("sk-alice"))
    assert first == again


async def test_without_watermark_nothing_changes(tmp_path: Path) -> None:
    plain = POLICY.split("provenance:")[0]
    seen = await chat(build(tmp_path, plain), {**bearer("sk-alice"), HEADER: "42"})
    assert seen == {"state": None, "headers": ["42"]}  # the feature off: the header is the app's


async def test_the_audit_names_key_and_principal_and_trace_seed_finds_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = await chat(build(tmp_path), {**bearer("sk-1"), "x-account-id": "acme"})
    (record,) = audit_records(tmp_path)
    key_id = Seeds(WATERMARK_KEY.encode()).key_id
    assert record["watermark"] == {"key_id": key_id, "principal": "a:acme"}
    assert str(seen["state"]) not in json.dumps(record)  # the seed itself is never written
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)

    def trace(*argv: str) -> tuple[int, str]:
        code = main(["trace", "seed", *argv])
        out = capsys.readouterr()
        return code, out.out + out.err

    code, out = await asyncio.to_thread(trace, "a:acme", "--policy", str(policy), "--json")
    assert code == 0, out
    assert json.loads(out) == {"principal": "a:acme", "seed": seen["state"], "key_id": key_id}
    trail = str(tmp_path / "audit.jsonl")
    argv = ["--seed", hex(seen["state"]), "--audit", trail, "--policy", str(policy)]
    code, out = await asyncio.to_thread(trace, *argv)
    assert code == 0, out
    assert out.startswith(f"seed {seen['state']}: a:acme, 1 record(s) from ")
    code, out = await asyncio.to_thread(
        trace, "--seed", "12345", "--audit", trail, "--policy", str(policy)
    )
    assert code == 1 and "no principal of the trails has it" in out, out
    code, out = await asyncio.to_thread(trace, "acme", "--policy", str(policy))
    assert code == 2 and "a:ACCOUNT" in out


def test_synthid_keys_are_stable_distinct_and_in_range() -> None:
    keys = synthid_keys(1234, 30)
    assert keys == synthid_keys(1234, 30) and len(set(keys)) == 30
    assert all(0 <= key < 2**63 for key in keys)
    assert synthid_keys(1235, 30) != keys


def test_remembered_seeds_are_bounded_and_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    from guardrail.identity import Subject
    from guardrail.provenance import watermark

    monkeypatch.setattr(watermark, "_REMEMBERED", 4)
    seeds = Seeds(WATERMARK_KEY.encode())
    for n in range(10):
        subject = Subject(None, f"acct-{n}", "203.0.113.7", "203.0.113.0/24")
        assert seeds.for_subject(subject).seed == seeds.seed(f"a:acct-{n}")
        assert seeds.for_subject(subject) is seeds.for_subject(subject)
        assert len(seeds._remembered) <= 4


async def test_a_websocket_handshake_gets_the_seed_never_the_clients(tmp_path: Path) -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append([h for h in scope["headers"] if h[0] == HEADER.encode()])
        await send({"type": "websocket.close", "code": 1000})

    policy = POLICY.replace('"^/v1/chat/completions$", methods: [POST]', '"^/v1/"')
    guarded = Guardrail(app, policy=Policy.from_string(policy), audit="stdout://")
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/v1/realtime",
        "raw_path": b"/v1/realtime",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", b"Bearer sk-alice"), (HEADER.encode(), b"42")],
        "client": ("203.0.113.7", 1234),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    await guarded.startup()
    try:
        await guarded(scope, receive, send)
    finally:
        await guarded.shutdown()
    principal = hash_key(SECRET.encode(), "sk-alice")
    assert seen == [[(HEADER.encode(), str(expected(principal)).encode())]]
