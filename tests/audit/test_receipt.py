"""``guardrail trace receipt``: a request's record found, its trail verified around it.

Trails are written by the real AuditLog, records carrying ``receipt`` as the middleware's
provenance capture writes it; tampering is done the way someone who can write the file but
does not hold the key could."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from guardrail.audit.chain import KeyedChain
from guardrail.audit.sinks import FileSink, sink_from_uri
from guardrail.audit.writer import AuditLog
from guardrail.cli import main

from audit_helpers import make_record, trail_lines

KEY = "receipt-chain-key-0123456789abcdef"
ENV = "GUARDRAIL_TEST_RECEIPT_KEY"


def body_of(i: int) -> bytes:
    return json.dumps({"choices": [{"message": {"content": f"answer number {i}"}}]}).encode()


def served(i: int) -> dict[str, Any]:
    body = body_of(i)
    receipt = {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
    return make_record(i, action="allow", status=200, limit=None, receipt=receipt)


async def write(sink: Any, count: int, key: str | None = KEY) -> None:
    log = AuditLog(sink, chain_key=None if key is None else key.encode())
    await log.start()
    for i in range(count):
        log.emit(served(i))
    await log.close()


@pytest.fixture
def trail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(ENV, KEY)
    path = tmp_path / "audit.jsonl"
    asyncio.run(write(FileSink(path), 6))
    return path


def receipt_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["trace", "receipt", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def rewrite(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_served_body_verifies_under_the_key(
    trail: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(body_of(2))
    argv = ["req-000002", "--audit", str(trail), "--key", f"env:{ENV}", "--body", str(body)]
    code, out = receipt_cli(capsys, *argv)
    assert code == 0, out
    assert out.startswith("receipt for request req-000002: VERIFIED")
    digest = hashlib.sha256(body_of(2)).hexdigest()
    assert f"body       sha256:{digest} ({len(body_of(2))} bytes)" in out
    assert f"{body}: sha256:{digest}" in out and "matches" in out
    assert f"record     {trail}:3, writer " in out
    assert "keyed chain (hmac-sha256), checked with the key: intact" in out
    assert f"3 record(s) after it and sealed its chain at {trail}:7" in out
    assert "api_key=k:" in out and "POST /v1/chat/completions (route inference) -> 200" in out


def test_json_shape(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["req-000001", "--audit", str(trail), "--key", f"env:{ENV}", "--json"]
    code, out = receipt_cli(capsys, *argv)
    assert code == 0, out
    data = json.loads(out)
    lines = trail_lines(trail)
    record = json.loads(lines[1])
    assert data["status"] == "verified" and data["request_id"] == "req-000001"
    assert data["served"] == {
        "ts": record["ts"],
        "route": "inference",
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 200,
        "action": "allow",
        "subject": record["subject"],
    }
    assert data["receipt"] == record["receipt"]
    chain = KeyedChain(KEY.encode())
    assert data["record"] == {
        "trail": str(trail),
        "location": f"{trail}:2",
        "writer": record["writer"],
        "seq": 2,
        "prev": record["prev"],
        "link": chain.link(lines[1]),  # what the next line carries
        "duplicates": [],
    }
    assert json.loads(lines[2])["prev"] == data["record"]["link"]
    assert data["chain"]["kind"] == "hmac-sha256" and data["chain"]["checked_with_key"] is True
    assert data["chain"]["status"] == "intact" and data["chain"]["records_after"] == 4
    assert data["chain"]["sealed_after"] == f"{trail}:7"
    assert set(data) == {"request_id", "status", "served", "receipt", "record", "chain"}


def test_a_wrong_body_is_exit_1(
    trail: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(body_of(3))  # another request's answer
    argv = ["req-000002", "--audit", str(trail), "--key", f"env:{ENV}", "--body", str(body)]
    code, out = receipt_cli(capsys, *argv, "--json")
    assert code == 1, out
    data = json.loads(out)
    assert data["status"] == "body_mismatch" and data["body"]["matches"] is False
    assert data["chain"]["status"] == "intact"


def test_a_missing_request_is_exit_1(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = receipt_cli(capsys, "req-999999", "--audit", str(trail), "--key", f"env:{ENV}")
    assert (code, out.strip()) == (
        1,
        "receipt for request req-999999: NOT FOUND in the trails given",
    )
    code, out = receipt_cli(capsys, "req-999999", "--audit", str(trail), "--json")
    assert (code, json.loads(out)) == (1, {"request_id": "req-999999", "status": "not_found"})


@pytest.mark.parametrize(
    ("line", "what"),
    [(2, "the record itself"), (4, "a record after it"), (0, "a record before it")],
)
def test_an_edited_record_breaks_the_receipt(
    trail: Path, line: int, what: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = trail_lines(trail)
    record = json.loads(lines[line])
    edited = lines[line].replace(record["receipt"]["sha256"], "0" * 64, 1)
    assert edited != lines[line]
    lines[line] = edited
    rewrite(trail, lines)
    code, out = receipt_cli(capsys, "req-000002", "--audit", str(trail), "--key", f"env:{ENV}")
    assert code == 1, (what, out)
    assert out.startswith("receipt for request req-000002: NOT VERIFIED: the trail's chain is")
    assert f"verify     {trail}:{line + 2}: broken" in out


def test_a_record_removed_after_it_breaks_the_receipt(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = trail_lines(trail)
    del lines[4]
    rewrite(trail, lines)
    code, out = receipt_cli(capsys, "req-000002", "--audit", str(trail), "--key", f"env:{ENV}")
    assert code == 1 and "broken link in the chain of writer" in out, out


def test_records_cut_from_the_end_are_said(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rewrite(trail, trail_lines(trail)[:-2])  # the last record and the seal
    code, out = receipt_cli(capsys, "req-000002", "--audit", str(trail), "--key", f"env:{ENV}")
    assert code == 0, out  # a writer still running looks the same
    assert "has not sealed its chain" in out and "records cut from its end would not show" in out


def test_without_the_key_it_is_exit_3(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = receipt_cli(capsys, "req-000002", "--audit", str(trail))
    assert code == 3, out
    assert "NOT CHECKED UNDER THE KEY" in out
    assert "keyed chain read without its key: only its sequence numbers were checked" in out
    assert "link       (keyed: needs the key)" in out


def test_another_key_is_a_broken_chain(
    trail: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTHER_KEY", "not-the-chain-key-at-all-0123456789")
    code, out = receipt_cli(capsys, "req-000002", "--audit", str(trail), "--key", "env:OTHER_KEY")
    assert code == 1 and "written with another key?" in out, out


def test_a_plain_chain_is_checked_unkeyed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plain.jsonl"
    asyncio.run(write(FileSink(path), 3, key=None))
    code, out = receipt_cli(capsys, "req-000001", "--audit", str(path))
    assert code == 0, out
    assert "plain sha256 chain, checked unkeyed: it shows accidental damage only" in out


def test_a_record_without_receipt_is_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, KEY)
    path = tmp_path / "audit.jsonl"

    async def limited() -> None:
        log = AuditLog(FileSink(path), chain_key=KEY.encode())
        await log.start()
        log.emit(make_record(7))
        await log.close()

    asyncio.run(limited())
    code, out = receipt_cli(capsys, "req-000007", "--audit", str(path), "--key", f"env:{ENV}")
    assert code == 1 and "carries no receipt" in out, out


def test_rotated_files_and_globs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, KEY)
    path = tmp_path / "audit-1.jsonl"
    sink = sink_from_uri(f"file://{path}", max_bytes=1500, keep=10)
    asyncio.run(write(sink, 12))
    rotated = sorted(p.name for p in tmp_path.iterdir())
    assert "audit-1.jsonl.1" in rotated, rotated
    first = json.loads(trail_lines(path)[0])["request_id"]
    argv = [first, "--audit", str(tmp_path / "audit-*.jsonl"), "--key", f"env:{ENV}", "--json"]
    code, out = receipt_cli(capsys, *argv)
    assert code == 0, out
    data = json.loads(out)
    assert ".jsonl." in data["record"]["location"]  # found in a rotated file
    assert data["chain"]["sealed_after"] is not None


def test_the_key_from_the_policy_and_refused_input(
    trail: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"version: 1\naudit: {{chain_key: env:{ENV}}}\n")
    assert receipt_cli(capsys, "req-000002", "--audit", str(trail), "--policy", str(policy))[0] == 0
    policy.write_text("version: 1\n")
    code, out = receipt_cli(capsys, "req-000002", "--audit", str(trail), "--policy", str(policy))
    assert (code, out.strip()) == (2, f"{policy}: the policy has no audit.chain_key")
    code, out = receipt_cli(capsys, "req-000002", "--audit", str(trail), "--key", KEY)
    assert code == 2 and KEY not in out
    code, out = receipt_cli(capsys, "req-000002", "--audit", str(tmp_path / "none.jsonl"))
    assert code == 2 and "no audit trail at" in out
    code, out = receipt_cli(
        capsys, "req-000002", "--audit", str(trail), "--body", str(tmp_path / "nope")
    )
    assert code == 2 and "--body" in out


async def test_a_redis_stream_trail(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"{redis_url}?stream=test:receipts"
    await write(sink_from_uri(uri), 4)
    argv = ["req-000003", "--audit", uri, "--key", f"env:{ENV}", "--json"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV, KEY)
        code, out = await asyncio.to_thread(receipt_cli, capsys, *argv)
    assert code == 0, out
    data = json.loads(out)
    assert data["record"]["location"].startswith(f"{redis_url}?stream=test:receipts #")
    assert data["chain"]["status"] == "intact"
