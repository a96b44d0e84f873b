"""``guardrail trace receipt``: what the audit trail says was served for one request, and
whether the trail still vouches for it.

The record of a response on a provenance route carries ``"receipt": {"sha256", "bytes"}`` of
the body as served. A receipt is worth what the chain around it is worth, so the trail that
holds the record is verified whole (:func:`guardrail.audit.verify.check_trail`): the links up
to the record (it was not edited, nor slipped in) and those after it (no later record was
edited, removed or inserted). Under ``audit.chain_key``, checked with the key, that holds
against anyone who can write the trail but does not hold the key; a plain SHA-256 chain, or a
keyed one read without its key, only against accidents, and the statement says so. Records cut
from the end of a writer's chain are visible only through its seal: the statement says whether
the writer sealed its chain after the record.

Exit codes follow ``guardrail audit verify``: 0 verified; 1 not verified (no such record, no
receipt on it, a body that does not match, or a broken chain); 2 input refused; 3 a keyed
chain read without its key (its links unchecked).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from guardrail.audit.chain import KEYED, SEALED, KeyedChain
from guardrail.audit.reader import Location, parse_line, printable
from guardrail.audit.record import link
from guardrail.audit.sources import FileTrail, StreamTrail, sources
from guardrail.audit.verify import Verdict, check_trail
from guardrail.errors import GuardrailError

VERIFIED, NOT_VERIFIED, BAD_INPUT, UNCHECKED = 0, 1, 2, 3

_EXIT = {
    "verified": VERIFIED,
    "not_found": NOT_VERIFIED,
    "no_receipt": NOT_VERIFIED,
    "body_mismatch": NOT_VERIFIED,
    "broken": NOT_VERIFIED,
    "unchecked": UNCHECKED,
}

_READ = 1 << 20


def add_receipt_arguments(receipt: argparse.ArgumentParser) -> None:
    receipt.add_argument("request_id", metavar="REQUEST_ID", help="its guardrail-request-id")
    receipt.add_argument(
        "--audit",
        nargs="+",
        required=True,
        metavar="TRAIL",
        help="the trails that may hold its record: files (rotations included), globs, or Redis "
        "stream URIs",
    )
    keys = receipt.add_mutually_exclusive_group()
    keys.add_argument("--policy", metavar="POLICY", help="the key its audit.chain_key names")
    keys.add_argument("--key", metavar="REF", help="the chain key: env:NAME or file:PATH")
    receipt.add_argument(
        "--body", metavar="FILE", help="a body said to be the one served: does its SHA-256 match?"
    )
    receipt.add_argument("--json", action="store_true", help="machine-readable output")


@dataclass(slots=True)
class Found:
    """The record of one request in a trail, and what its writer wrote after it."""

    trail: FileTrail | StreamTrail
    location: Location
    raw: bytes
    record: dict[str, Any]
    later: int = 0
    """Records of the same writer after it."""
    sealed: Location | None = None
    """Where the writer sealed its chain after it, if it did."""
    duplicates: list[Location] = field(default_factory=list)
    """Other records of that trail with the same request id."""


def locate(trails: Sequence[FileTrail | StreamTrail], request_id: str) -> Found | None:
    """The first record of ``request_id`` in ``trails`` (seals excluded), and its writer's
    records after it in the same trail."""
    needle = b'"request_id":' + json.dumps(request_id, ensure_ascii=False).encode("utf-8")
    for trail in trails:
        found: Found | None = None
        for location, raw in trail.lines():
            if found is None:
                if needle in raw:
                    record = parse_line(raw)
                    if _is(record, request_id):
                        assert record is not None
                        found = Found(trail, location, raw, record)
                continue
            record = parse_line(raw)
            if record is None or record.get("writer") != found.record.get("writer"):
                continue
            if record.get("action") == SEALED:
                found.sealed = location
            elif _is(record, request_id):
                found.duplicates.append(location)
            else:
                found.later += 1
        if found is not None:
            return found
    return None


def _is(record: dict[str, Any] | None, request_id: str) -> bool:
    return (
        record is not None
        and record.get("request_id") == request_id
        and record.get("action") != SEALED
    )


def body_digest(path: str) -> tuple[str, int]:
    """SHA-256 (hex) and size of the file at ``path``, read a MiB at a time."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def statement(
    request_id: str,
    found: Found | None,
    verdict: Verdict | None,
    key: bytes | None,
    body: tuple[str, str, int] | None,
) -> dict[str, Any]:
    """The receipt as data: what was served, to whom, and how far the trail vouches for it.
    ``body``: (path, sha256 hex, bytes) of a file to compare, if one was given."""
    if found is None or verdict is None:
        return {"request_id": request_id, "status": "not_found"}
    record = found.record
    prev = record.get("prev")
    keyed = isinstance(prev, str) and prev.startswith(KEYED)
    receipt = record.get("receipt")
    receipt = receipt if _is_receipt(receipt) else None
    if keyed and key is not None:
        line_link: str | None = KeyedChain(key).link(found.raw)
    elif isinstance(prev, str) and not keyed:
        line_link = link(found.raw)
    else:
        line_link = None  # a keyed link cannot be computed without the key
    data: dict[str, Any] = {
        "request_id": request_id,
        "status": "verified",
        "served": {
            "ts": record.get("ts"),
            "route": record.get("route"),
            "method": record.get("method"),
            "path": record.get("path"),
            "status": record.get("status"),
            "action": record.get("action"),
            "subject": record.get("subject"),
        },
        "receipt": receipt,
        "record": {
            "trail": found.trail.name,
            "location": str(found.location),
            "writer": record.get("writer"),
            "seq": record.get("seq"),
            "prev": prev,
            "link": line_link,
            "duplicates": [str(location) for location in found.duplicates],
        },
        "chain": {
            "kind": "hmac-sha256" if keyed else "sha256",
            "checked_with_key": keyed and key is not None,
            "status": verdict.status,
            "report": verdict.report,
            "records_after": found.later,
            "sealed_after": None if found.sealed is None else str(found.sealed),
        },
    }
    if "watermark" in record:
        data["watermark"] = record["watermark"]
    if body is not None:
        path, sha256, size = body
        matches = receipt is not None and receipt["sha256"] == sha256 and receipt["bytes"] == size
        data["body"] = {"path": path, "sha256": sha256, "bytes": size, "matches": matches}
    data["status"] = _status(data, verdict)
    return data


def _is_receipt(value: object) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("sha256"), str)
        and isinstance(value.get("bytes"), int)
    )


def _status(data: dict[str, Any], verdict: Verdict) -> str:
    if verdict.status == "broken":
        return "broken"
    if data["receipt"] is None:
        return "no_receipt"
    if "body" in data and not data["body"]["matches"]:
        return "body_mismatch"
    return "verified" if verdict.status == "intact" else "unchecked"


_HEADLINE = {
    "verified": "VERIFIED",
    "unchecked": "NOT CHECKED UNDER THE KEY",
    "broken": "NOT VERIFIED: the trail's chain is broken",
    "body_mismatch": "NOT VERIFIED: the body given is not the one served",
    "no_receipt": "NOT VERIFIED: its record carries no receipt (not a provenance route?)",
}


def render(data: dict[str, Any]) -> str:
    """The statement for a human (every value a client chose shown escaped)."""
    request_id = data["request_id"]
    if data["status"] == "not_found":
        return f"receipt for request {request_id}: NOT FOUND in the trails given"
    served, record, chain = data["served"], data["record"], data["chain"]
    subject = served.get("subject")
    who = (
        " ".join(f"{name}={value}" for name, value in subject.items())
        if isinstance(subject, dict)
        else "?"
    )
    lines = [
        f"receipt for request {request_id}: {_HEADLINE[data['status']]}",
        f"  served     {served['ts']}  {served['method']} {served['path']} "
        f"(route {served['route']}) -> {served['status']}",
        f"  to         {who}",
    ]
    receipt = data["receipt"]
    if receipt is not None:
        lines.append(f"  body       sha256:{receipt['sha256']} ({receipt['bytes']} bytes)")
    body = data.get("body")
    if body is not None:
        verdict = "matches" if body["matches"] else "DOES NOT MATCH"
        lines.append(
            f"  --body     {body['path']}: sha256:{body['sha256']} ({body['bytes']} bytes) "
            f"{verdict}"
        )
    if "watermark" in data:
        lines.append(f"  watermark  {json.dumps(data['watermark'])}")
    lines += [
        f"  record     {record['location']}, writer {record['writer']}, seq {record['seq']}",
        f"  prev       {record['prev']}",
        f"  link       {record['link'] or '(keyed: needs the key)'}",
        f"  chain      {_chain_text(chain)}",
    ]
    if record["duplicates"]:
        lines.append(f"  !! the same request id also at {', '.join(record['duplicates'])}")
    lines += [f"  verify     {line}" for line in chain["report"].splitlines()]
    return "\n".join(printable(line) for line in lines)


def _chain_text(chain: dict[str, Any]) -> str:
    if chain["kind"] == "sha256":
        how = (
            "plain sha256 chain, checked unkeyed: it shows accidental damage only, anyone who "
            "can write the trail can recompute it"
        )
    elif chain["checked_with_key"]:
        how = "keyed chain (hmac-sha256), checked with the key"
    else:
        how = "keyed chain read without its key: only its sequence numbers were checked"
    after = chain["records_after"]
    sealed = chain["sealed_after"]
    tail = (
        f"; its writer wrote {after} record(s) after it and sealed its chain at {sealed}"
        if sealed is not None
        else f"; its writer wrote {after} record(s) after it and has not sealed its chain "
        "(still writing, or stopped without closing): records cut from its end would not show"
    )
    return f"{how}: {chain['status']}{tail}"


def receipt(args: argparse.Namespace, key: bytes | None) -> int:
    """The command, once the chain key (if any) is resolved."""
    body = None
    if args.body is not None:
        try:
            sha256, size = body_digest(args.body)
        except OSError as exc:
            print(f"guardrail: --body {args.body}: {exc.strerror}", file=sys.stderr)
            return BAD_INPUT
        body = (args.body, sha256, size)
    try:
        trails = sources(args.audit)
        found = locate(trails, args.request_id)
        verdict = check_trail(found.trail, key) if found is not None else None
    except GuardrailError as exc:
        print(f"guardrail: {exc}", file=sys.stderr)
        return BAD_INPUT
    data = statement(args.request_id, found, verdict, key, body)
    print(json.dumps(data, indent=2) if args.json else render(data))
    return _EXIT[data["status"]]
