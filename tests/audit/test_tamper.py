"""Tampering with a keyed trail (audit.chain_key), as `guardrail audit verify` sees it.

The trail is written by the real AuditLog; each case changes it the way someone who can write
the file but does not hold the key could, and the CLI must exit 1 naming the line where it
shows. Cutting records from the end cannot break a chain: it shows as a chain that ends
unsealed (a warning: a crash looks the same)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from guardrail.audit.chain import KeyedChain, PlainChain
from guardrail.audit.record import encode
from guardrail.audit.sinks import FileSink, sink_from_uri
from guardrail.audit.verify import check
from guardrail.audit.writer import AuditLog
from guardrail.cli import main

from audit_helpers import make_record

KEY = "audit-chain-key-0123456789abcdef"
ENV = "GUARDRAIL_TEST_CHAIN_KEY"

# Two runs of one writer each on one file: lines 1-6 records of the first, 7 its seal; lines
# 8-11 records of the second (anchored after line 7), 12 its seal.
FIRST, SECOND = 6, 4


async def write_keyed(path: Path, runs: tuple[int, ...], key: str = KEY, base: int = 0) -> None:
    for run, count in enumerate(runs):
        log = AuditLog(FileSink(path), chain_key=key.encode())
        await log.start()
        for n in range(count):
            log.emit(make_record(base + 100 * run + n))
        await log.close()


@pytest.fixture
async def trail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(ENV, KEY)
    path = tmp_path / "audit.jsonl"
    await write_keyed(path, (FIRST, SECOND))
    return path


def verify_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["audit", "verify", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def rechain(lines: list[str], chain: KeyedChain | PlainChain) -> list[str]:
    """Every link, anchor and seal computed afresh with ``chain``: what a forger would do."""
    out: list[str] = []
    last: dict[str, str] = {}
    for line in lines:
        record: dict[str, Any] = json.loads(line)
        record.pop("mac", None)
        writer = record["writer"]
        record["prev"] = (
            chain.link(last[writer])
            if writer in last
            else chain.start(writer, out[-1] if out else None)
        )
        text = encode(record)
        text = chain.seal(text) if record.get("action") == "sealed" else text
        out.append(text)
        last[writer] = text
    return out


def edited(lines: list[str], _: Path) -> list[str]:
    lines[2] = lines[2].replace('"status":429', '"status":200', 1)
    return lines


def removed(lines: list[str], _: Path) -> list[str]:
    del lines[2]
    return lines


def inserted(lines: list[str], _: Path) -> list[str]:
    # As well as it can be done without the key: it copies the prev (and seq) the line it
    # displaces carries, so it links to the line before; the line after it then does not.
    forged = json.loads(lines[1])
    forged.update(request_id="req-forged", prev=json.loads(lines[4])["prev"])
    forged["seq"] = json.loads(lines[4])["seq"]
    lines.insert(4, encode(forged))
    return lines


def swapped(lines: list[str], _: Path) -> list[str]:
    lines[2], lines[3] = lines[3], lines[2]
    return lines


def spliced(lines: list[str], tmp: Path) -> list[str]:
    # A record of another writer's chain, under the same key (another worker's trail).
    other = tmp / "other.jsonl"
    asyncio.run(write_keyed(other, (3,), base=500))
    lines.insert(4, lines_of(other)[1])
    return lines


def plain_rewrite(lines: list[str], _: Path) -> list[str]:
    lines[2] = lines[2].replace('"status":429', '"status":200', 1)
    return rechain(lines, PlainChain())


def wrong_key(lines: list[str], _: Path) -> list[str]:
    lines[2] = lines[2].replace('"status":429', '"status":200', 1)
    return rechain(lines, KeyedChain(b"a key that is not the chain key"))


def seal_edited(lines: list[str], _: Path) -> list[str]:
    lines[6] = lines[6].replace('"reason":"close"', '"reason":"exit"', 1)
    return lines


def seal_moved(lines: list[str], _: Path) -> list[str]:
    # The first run's tail cut, and its seal put back after what is left
    seal = lines[6]
    del lines[4:7]
    lines.insert(4, seal)
    return lines


# case -> (tampering, the line verify must name, what it must say)
TAMPERED: dict[str, tuple[Callable[[list[str], Path], list[str]], int, str]] = {
    "one field edited": (edited, 4, "was altered, or a line after it removed or inserted"),
    "a record removed": (removed, 3, "broken link in the chain of writer"),
    "a record inserted": (inserted, 6, "broken link in the chain of writer"),
    "two records swapped": (swapped, 3, "lines out of order"),
    "another writer's record spliced in": (spliced, 5, "comes from another trail or writer"),
    "rewritten with plain sha256": (plain_rewrite, 1, "written without audit.chain_key"),
    "rewritten with another key": (wrong_key, 2, "written with another key?"),
    "a seal edited": (seal_edited, 7, "does not carry its own MAC"),
    "a seal moved up after a cut": (seal_moved, 5, "broken link in the chain of writer"),
}


def test_the_untampered_trail_verifies_with_the_key(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = verify_cli(capsys, str(trail), "--key", f"env:{ENV}")
    assert code == 0, out
    assert (
        "10 records in 1 file(s) by 2 writers, each writer's keyed chain (hmac-sha256) intact"
        in out
    )
    assert f"starts at genesis, sealed at {trail}:7" in out
    assert f"continues the trail after {trail}:7, sealed at {trail}:12" in out
    assert "(seq 1-6)" in out and "warning" not in out
    assert KEY not in trail.read_text()


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampering_is_found_and_named(
    case: str, trail: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tamper, line, says = TAMPERED[case]
    trail.write_text("\n".join(tamper(lines_of(trail), tmp_path)) + "\n", encoding="utf-8")
    code, out = verify_cli(capsys, str(trail), "--key", f"env:{ENV}")
    assert code == 1, out
    assert out.startswith(f"{trail}:{line}: broken"), out
    assert says in out
    assert "intact" not in out


def test_records_cut_from_the_end_leave_the_chain_unsealed(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trail.write_text("\n".join(lines_of(trail)[:-2]) + "\n", encoding="utf-8")  # a record, a seal
    code, out = verify_cli(capsys, str(trail), "--key", f"env:{ENV}")
    assert code == 0, out  # a crash looks the same: said, not refused
    assert f"ends unsealed at {trail}:10 (still writing, stopped without closing" in out


def test_without_the_key_a_keyed_trail_is_never_called_intact(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = verify_cli(capsys, str(trail))
    assert code == 3, out
    assert out.startswith("UNCHECKED: 10 records")
    assert "cannot be checked without the key" in out and "intact" not in out
    # Edited: nothing without the key can tell
    trail.write_text("\n".join(edited(lines_of(trail), trail)) + "\n", encoding="utf-8")
    assert verify_cli(capsys, str(trail))[0] == 3


@pytest.mark.parametrize(("tamper", "line"), [(removed, 3), (swapped, 3), (inserted, 6)])
def test_without_the_key_the_sequence_still_shows_a_removed_moved_or_added_line(
    tamper: Callable[[list[str], Path], list[str]],
    line: int,
    trail: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    trail.write_text("\n".join(tamper(lines_of(trail), trail)) + "\n", encoding="utf-8")
    code, out = verify_cli(capsys, str(trail))
    assert code == 1, out
    assert out.startswith(f"{trail}:{line}: broken: writer ")
    assert "the keyed links themselves were not checked" in out


def test_the_key_from_the_policy(
    trail: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"version: 1\naudit: {{chain_key: env:{ENV}}}\n")
    assert verify_cli(capsys, str(trail), "--policy", str(policy))[0] == 0
    policy.write_text("version: 1\n")
    code, out = verify_cli(capsys, str(trail), "--policy", str(policy))
    assert (code, out.strip()) == (1, f"{policy}: the policy has no audit.chain_key")


async def test_chain_key_secret_derives_from_the_policy_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers import SECRET

    path = tmp_path / "audit.jsonl"
    await write_keyed(path, (2,), key=SECRET)
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nsecret: env:GUARDRAIL_TEST_SECRET\naudit: {chain_key: secret}\n")
    code, out = await asyncio.to_thread(verify_cli, capsys, str(path), "--policy", str(policy))
    assert code == 0, out


def test_a_key_on_the_command_line_is_refused(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = verify_cli(capsys, str(trail), "--key", KEY)
    assert code == 1
    assert "never the key itself" in out and KEY not in out


def test_a_plain_trail_verifies_as_before_and_is_refused_where_a_key_is_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, KEY)
    path = tmp_path / "plain.jsonl"

    async def write() -> None:
        log = AuditLog(FileSink(path))
        await log.start()
        for n in range(3):
            log.emit(make_record(n))
        await log.close()

    asyncio.run(write())
    assert len(lines_of(path)) == 3  # a plain chain has no seal
    code, out = verify_cli(capsys, str(path))
    assert code == 0 and "hash chain intact, starts at genesis" in out
    code, out = verify_cli(capsys, str(path), "--key", f"env:{ENV}")
    assert code == 1 and out.startswith(f"{path}:1: broken: a plain sha256 chain")


def test_keying_a_plain_trail_later_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, KEY)
    path = tmp_path / "audit.jsonl"

    async def write() -> None:
        plain = AuditLog(FileSink(path))
        await plain.start()
        plain.emit(make_record(0))
        await plain.close()
        await write_keyed(path, (2,))

    asyncio.run(write())
    code, out = verify_cli(capsys, str(path), "--key", f"env:{ENV}")
    assert code == 0, out
    assert f"the 1 plain sha256 record(s) before {path}:2" in out
    assert f"continues the trail after {path}:1" in out
    # and a plain line after keyed ones is a rewrite
    lines = lines_of(path)
    lines[2:] = rechain(lines, PlainChain())[2:]
    path.write_text("\n".join(lines) + "\n")
    code, out = verify_cli(capsys, str(path), "--key", f"env:{ENV}")
    assert code == 1 and out.startswith(f"{path}:3: broken: a plain sha256 link after keyed")


async def test_a_process_ending_without_close_seals_its_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(FileSink(path), chain_key=KEY.encode())
    await log.start()
    for n in range(3):
        log.emit(make_record(n))
    log.exit_sync()
    last = json.loads(lines_of(path)[-1])
    assert (last["action"], last["reason"], last["seq"]) == ("sealed", "exit", 4)
    verdict = await asyncio.to_thread(check, path, KEY.encode())
    assert verdict.status == "intact", verdict.report
    assert "sealed at" in verdict.report


async def test_a_keyed_redis_stream(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    import redis.asyncio as aioredis

    uri = f"{redis_url}?stream=keyed"
    a = AuditLog(sink_from_uri(uri), chain_key=KEY.encode())
    b = AuditLog(sink_from_uri(uri), chain_key=KEY.encode())
    await a.start()
    await b.start()
    for n in range(3):
        a.emit(make_record(n))
        await a.flush()
        b.emit(make_record(10 + n))
        await b.flush()
    await a.close()
    await b.close()
    key = KEY.encode()
    verdict = await asyncio.to_thread(check, uri, key)
    assert verdict.status == "intact", verdict.report
    assert "by 2 writers, each writer's keyed chain (hmac-sha256) intact" in verdict.report
    assert (await asyncio.to_thread(check, uri)).status == "unchecked"
    client = aioredis.from_url(redis_url)
    entries = await client.xrange("keyed")
    await client.xdel("keyed", entries[-1][0])  # b's seal: cut from the end
    verdict = await asyncio.to_thread(check, uri, key)
    assert verdict.status == "intact"
    assert f"writer {b.writer} ends unsealed at {uri} #" in verdict.report
    await client.xdel("keyed", entries[2][0])  # a's second record
    await client.aclose()
    verdict = await asyncio.to_thread(check, uri, key)
    assert verdict.status == "broken"
    assert verdict.report.startswith(f"{uri} #")
    assert f"broken link in the chain of writer {a.writer}" in verdict.report


def test_the_keyed_link_is_hmac_sha256_under_the_derived_subkey() -> None:
    import hashlib
    import hmac

    subkey = hmac.new(KEY.encode(), b"guardrail audit chain v1", hashlib.sha256).digest()
    line = encode(make_record(1))
    expected = hmac.new(subkey, line.encode(), hashlib.sha256).hexdigest()
    assert KeyedChain(KEY.encode()).link(line) == "hmac-sha256:" + expected
    anchor = hmac.new(subkey, b"anchor\0w\0genesis", hashlib.sha256).hexdigest()
    assert KeyedChain(KEY.encode()).start("w", None) == "hmac-sha256:" + anchor


async def test_the_middleware_keys_the_trail_its_policy_names(
    tmp_path: Path, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers import POLICY, bearer, build, client

    monkeypatch.setenv(ENV, KEY)
    app = build(tmp_path, clock, POLICY + f"audit: {{chain_key: env:{ENV}}}\n")
    async with client(app) as http:
        for _ in range(4):
            await http.get("/page", headers=bearer("sk-keyed"))
    await app.shutdown()
    verdict = await asyncio.to_thread(check, tmp_path / "audit.jsonl", KEY.encode())
    assert verdict.status == "intact", verdict.report
    assert "keyed chain (hmac-sha256) intact" in verdict.report


def test_seals_are_shown_by_tail_and_left_out_of_summary(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "summary", str(trail), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["records"], data["by_action"]) == (FIRST + SECOND, {"limit": FIRST + SECOND})
    assert main(["audit", "tail", str(trail)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert len(shown) == FIRST + SECOND + 2
    assert "sealed" in shown[FIRST] and "ended its chain here (close)" in shown[FIRST]
