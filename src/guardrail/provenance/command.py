"""``guardrail trace find``: rank the subjects a suspect dataset was served to."""

from __future__ import annotations

import argparse
import glob
import json
import re
import sys
import time

from guardrail.backends.uri import mask_uri
from guardrail.errors import ProvenanceError
from guardrail.provenance import suspects
from guardrail.provenance.attribute import MIN_BINS, MIN_TEXTS, Attribution, attribute
from guardrail.provenance.index import ProvenanceIndex
from guardrail.secrets import location_argument

_GLOB = re.compile(r"[*?[]")
#: An index in Redis rather than a file: a storage URI (uri.SCHEMES).
_REDIS = re.compile(r"(?i)redis(s|\+cluster|\+sentinel)?://")
#: Exit codes: someone named, nobody beyond chance, input refused.
NAMED, NOBODY, BAD_INPUT = 0, 1, 2


def add_find_arguments(find: argparse.ArgumentParser) -> None:
    find.add_argument(
        "suspects",
        nargs="+",
        metavar="SUSPECT",
        help='a JSONL file ({"text"}, chat completions or {"messages"} rows), a JSON '
        "file, a plain text file (one text), or a directory of those",
    )
    find.add_argument(
        "--index",
        required=True,
        action="append",
        metavar="PATH",
        type=location_argument,
        help="an index file a server saved, or a glob of them (one per worker: "
        "'guardrail-provenance-*.grprov'), or the storage URI of an index in Redis "
        "(redis://host:port/db, redis+cluster://h1:p1,h2:p2; ?prefix= as in the policy); "
        "repeat it for more, they are searched as one; env:NAME or file:PATH reads it from "
        "there, keeping a Redis password off the command line",
    )
    find.add_argument("--json", action="store_true", help="machine-readable output")
    find.add_argument("--top", type=int, default=10, metavar="N", help="subjects listed (10)")
    find.add_argument(
        "--min-texts", type=int, default=MIN_TEXTS, help=f"texts to name a subject ({MIN_TEXTS})"
    )
    find.add_argument(
        "--min-bins", type=int, default=MIN_BINS, help=f"bins of 48 for a match ({MIN_BINS})"
    )


def find(args: argparse.Namespace) -> int:
    redis = [location for location in args.index if _REDIS.match(location)]
    try:
        paths = index_files([location for location in args.index if location not in redis])
        indexes = [ProvenanceIndex.load(path) for path in paths]
        if redis:
            from guardrail.provenance import index_redis_read  # redis: an optional dependency

            indexes += [index_redis_read.load(uri) for uri in redis]
        index = ProvenanceIndex.merged(indexes)
        texts = list(suspects.read(args.suspects))
    except ProvenanceError as exc:
        print(f"guardrail: {exc}", file=sys.stderr)
        return BAD_INPUT
    if not texts:
        print(f"guardrail: no suspect texts in {' '.join(args.suspects)}", file=sys.stderr)
        return BAD_INPUT
    result = attribute(index, texts, min_bins=args.min_bins, min_texts=args.min_texts)
    shown = " ".join([*paths, *map(mask_uri, redis)])
    if args.json:
        data = result.as_dict(args.top)
        where: dict[str, object] = {"path": shown, "files": paths, "entries": len(index)}
        if redis:
            where["redis"] = [mask_uri(uri) for uri in redis]
        data["index"] = where
        print(json.dumps(data, indent=2))
    else:
        print(render(result, shown, len(index), args.top))
    return NAMED if result.named else NOBODY


def index_files(patterns: list[str]) -> list[str]:
    """The files ``--index`` names: each a path, or a glob (quoted, so the shell leaves it)
    that must match at least one file; a file named twice is read once."""
    paths: list[str] = []
    for pattern in patterns:
        found = sorted(glob.glob(pattern)) if _GLOB.search(pattern) else [pattern]
        if not found:
            raise ProvenanceError("no index file matches this pattern", pattern)
        paths += [path for path in found if path not in paths and not path.endswith(_NOT_INDEX)]
    return paths


#: What a server writes next to its index files: its slot's lock, a save in progress, and a
#: file set aside.
_NOT_INDEX = (".lock", ".tmp", ".old")


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


def render(result: Attribution, path: str, entries: int, top: int) -> str:
    lines = [
        f"index {path}: {entries} entries; suspects: {result.suspects} texts, "
        f"{result.sketched} long enough to compare"
    ]
    if result.ranked:
        lines.append(
            f"{'rank':<5}{'subject':<28}{'texts':>6}{'mean sim':>10}{'max sim':>9}  "
            "served between (UTC)"
        )
        for rank, e in enumerate(result.ranked[:top], 1):
            mark = "*" if e.texts >= result.min_texts else " "
            lines.append(
                f"{rank:<4}{mark}{e.subject:<28}{e.texts:>6}{e.mean_similarity:>10.2f}"
                f"{e.max_similarity:>9.2f}  {_when(e.first)} .. {_when(e.last)}"
            )
    rule = f">= {result.min_texts} texts matching at >= {result.min_bins}/48 bins"
    if result.named:
        names = ", ".join(e.subject for e in result.named)
        lines.append(f"named (*, {rule}): {names}")
    else:
        best = f"; the closest: {result.ranked[0].texts} text(s)" if result.ranked else ""
        lines.append(f"attributed to nobody: no subject has {rule}{best}")
    return "\n".join(lines)
