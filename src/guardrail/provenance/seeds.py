"""``guardrail trace seed``: a subject's watermark seed, or the subjects a detected seed names.

The audit trail records, for each request given a seed, the key's id and the principal
(:mod:`guardrail.provenance.watermark`), never the seed; both directions recompute seeds with
the key the policy names, so they run where that secret is held.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

from guardrail.audit.reader import Location, printable, records_of
from guardrail.audit.sources import sources
from guardrail.errors import GuardrailError, PolicyError
from guardrail.policy import Policy
from guardrail.provenance.watermark import Seeds, synthid_keys, watermark_of
from guardrail.secrets import resolve_secret

#: Exit codes: printed or named, nobody has that seed, input refused.
FOUND, NOBODY, BAD_INPUT = 0, 1, 2

_PRINCIPAL = ("a:", "k:", "i:")


def add_seed_arguments(seed: argparse.ArgumentParser) -> None:
    seed.add_argument(
        "subject",
        nargs="?",
        metavar="SUBJECT",
        help="a principal as the trail names it: a:ACCOUNT, k:KEYHASH (guardrail hash-key), "
        "i:ADDRESS",
    )
    seed.add_argument("--policy", required=True, metavar="POLICY", help="its provenance.watermark")
    seed.add_argument(
        "--seed",
        metavar="SEED",
        help="the other way: which principals of the trails (--audit) have this seed (decimal "
        "or 0x hex)",
    )
    seed.add_argument("--audit", nargs="+", metavar="TRAIL", help="trails to look in (--seed)")
    seed.add_argument(
        "--synthid", type=int, default=0, metavar="N", help="also N SynthID-Text keys of the seed"
    )
    seed.add_argument("--json", action="store_true", help="machine-readable output")


@dataclass(slots=True)
class Served:
    """What the trail says of one principal given seeds under this key."""

    records: int
    first: str
    last: str
    location: Location


def run(args: argparse.Namespace) -> int:
    if (args.subject is None) == (args.seed is None):
        return _refuse("give a SUBJECT, or --seed SEED with --audit TRAIL...")
    if args.seed is not None and not args.audit:
        return _refuse("--seed looks the seed up in audit trails: give them with --audit")
    try:
        mark = Policy.from_yaml(args.policy).provenance.watermark
        if mark is None:
            return _refuse(f"{args.policy}: the policy has no provenance.watermark")
        seeds = Seeds(resolve_secret(mark.key))
    except PolicyError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return BAD_INPUT
    except GuardrailError as exc:
        return _refuse(str(exc))
    if args.subject is not None:
        return _forward(args, seeds)
    try:
        wanted = int(args.seed, 0)
    except ValueError:
        return _refuse(f"--seed {args.seed!r}: a whole number (decimal, or hex with 0x)")
    try:
        found, checked = lookup(seeds, wanted, args.audit)
    except GuardrailError as exc:
        return _refuse(str(exc))
    _print_lookup(args, seeds, wanted, found, checked)
    return FOUND if found else NOBODY


def _forward(args: argparse.Namespace, seeds: Seeds) -> int:
    principal = args.subject
    if not principal.startswith(_PRINCIPAL):
        return _refuse(
            f"{principal!r}: a principal as the trail names it: a:ACCOUNT, k:KEYHASH "
            "(`guardrail hash-key` prints it), or i:ADDRESS"
        )
    seed = seeds.seed(principal)
    data: dict[str, Any] = {"principal": principal, "seed": seed, "key_id": seeds.key_id}
    if args.synthid:
        data["synthid_keys"] = synthid_keys(seed, args.synthid)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(printable(f"{principal}: watermark seed {seed} (0x{seed:016x}), key {seeds.key_id}"))
        if args.synthid:
            print(f"synthid keys: {data['synthid_keys']}")
    return FOUND


def lookup(seeds: Seeds, wanted: int, trails: list[str]) -> tuple[dict[str, Served], int]:
    """The principals of ``trails`` whose records name this key and whose seed is ``wanted``,
    and how many principals under this key were checked."""
    seen: dict[str, bool] = {}
    found: dict[str, Served] = {}
    for location, record in records_of(sources(trails), []):
        mark = watermark_of(record)
        if mark is None or mark[0] != seeds.key_id:
            continue
        principal = mark[1]
        match = seen.get(principal)
        if match is None:
            match = seen[principal] = seeds.seed(principal) == wanted
        if match:
            ts = str(record.get("ts", "?"))
            served = found.get(principal)
            if served is None:
                found[principal] = Served(1, ts, ts, location)
            else:
                served.records += 1
                served.last = ts
    return found, len(seen)


def _print_lookup(
    args: argparse.Namespace, seeds: Seeds, wanted: int, found: dict[str, Served], checked: int
) -> None:
    if args.json:
        rows = [
            {
                "principal": principal,
                "records": served.records,
                "first": served.first,
                "last": served.last,
                "first_record": str(served.location),
            }
            for principal, served in found.items()
        ]
        data = {"seed": wanted, "key_id": seeds.key_id, "principals_checked": checked}
        print(json.dumps({**data, "served": rows}, indent=2))
        return
    if not found:
        print(
            f"seed {wanted}: no principal of the trails has it under key {seeds.key_id} "
            f"({checked} principal(s) checked)"
        )
        return
    for principal, served in found.items():
        print(
            printable(
                f"seed {wanted}: {principal}, {served.records} record(s) from {served.first} "
                f"to {served.last} (first at {served.location}), key {seeds.key_id}"
            )
        )


def _refuse(message: str) -> int:
    print(f"guardrail: {message}", file=sys.stderr)
    return BAD_INPUT
