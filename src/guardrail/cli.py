"""The ``guardrail`` command: check policies, print the schema, list which of an app's routes a
policy guards, hash keys, read the audit trail, list the risk signals, simulate campaigns
against a policy, trace leaked outputs to the subjects they were served to."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence

from guardrail import audit
from guardrail.cautions import cautions
from guardrail.errors import GuardrailError, PolicyError
from guardrail.identity import hash_key
from guardrail.policy import Policy, check_files, parse_duration
from guardrail.secrets import location_argument, resolve_secret
from guardrail.simulate import command as simulate_command


def _check(args: argparse.Namespace) -> int:
    issues = check_files(args.policies)
    for issue in issues:
        print(issue)
    if issues:
        noun = "error" if len(issues) == 1 else "errors"
        print(f"{len(issues)} {noun} in {len({i.file for i in issues})} file(s)", file=sys.stderr)
        return 1
    for path in args.policies:
        for caution in cautions(Policy.from_yaml(path)):
            print(f"warning: {caution}")
        print(f"{path}: ok")
    return 0


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(Policy.json_schema(), indent=2))
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    policy = Policy.from_yaml(args.policy)
    if policy.secret is None:
        print(
            f"{args.policy}: the policy has no `secret`, so API keys have no stable hash; "
            "set secret: env:NAME",
            file=sys.stderr,
        )
        return 1
    print(hash_key(resolve_secret(policy.secret), args.key))
    return 0


def _audit_tail(args: argparse.Namespace) -> int:
    return audit.tail(args.trails, follow=args.follow, lines=args.lines)


def _audit_summary(args: argparse.Namespace) -> int:
    since = parse_duration(args.since) if args.since else None
    data = audit.summary(args.trails, since)
    print(json.dumps(data, indent=2) if args.json else audit.render_summary(data))
    return 0


def _audit_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from guardrail.audit import html, report

    since = parse_duration(args.since) if args.since else None
    data = report.build(args.trails, since, top=args.top)
    Path(args.html).write_text(html.render(data), encoding="utf-8")
    print(f"{args.html}: {data.decisions:,} decisions from {len(data.files)} source(s)")
    return 0


def _chain_key(args: argparse.Namespace) -> bytes | str | None:
    """The audit chain's key from --policy or --key (None: neither), or why it cannot be had."""
    from guardrail.secrets import chain_secret, reference_kind

    if args.policy is not None:
        key = chain_secret(Policy.from_yaml(args.policy))
        return f"{args.policy}: the policy has no audit.chain_key" if key is None else key
    if args.key is not None:
        if reference_kind(args.key) == "literal":  # it would stay in the shell's history
            return "--key: env:NAME or file:PATH, never the key itself"
        return resolve_secret(args.key)
    return None


def _audit_verify(args: argparse.Namespace) -> int:
    from guardrail.audit.verify import EXIT, check

    key = _chain_key(args)
    if isinstance(key, str):
        print(key, file=sys.stderr)
        return 1
    verdict = check(args.trails, key)
    print(verdict.report, file=sys.stderr if verdict.status == "broken" else sys.stdout)
    return EXIT[verdict.status]


def _calibrate(args: argparse.Namespace) -> int:
    from guardrail.audit import calibrate

    target = calibrate.parse_target(args.target)
    policy = Policy.from_yaml(args.policy) if args.policy else None
    data = calibrate.calibrate(args.trails, target, policy, allow_enforce=args.allow_enforce)
    print(json.dumps(data, indent=2) if args.json else calibrate.render(data))
    return 0


def _routes(args: argparse.Namespace) -> int:
    from guardrail import coverage

    policy = Policy.from_yaml(args.policy)
    result = coverage.coverage(policy, coverage.load_app(args.app))
    if args.json:
        print(json.dumps(coverage.as_dict(result, policy, args.app), indent=2))
    else:
        print(coverage.render(result, policy, args.app))
    return 1 if args.strict and result.unguarded_posts else 0


def _signals(args: argparse.Namespace) -> int:
    from guardrail.signals.catalog import SIGNALS

    name_width = max(len(signal.name) for signal in SIGNALS) + 2
    indent = " " * (name_width + 18)
    print(f"{'signal':<{name_width}}{'points':>6}  {'scope':<10}what it measures")
    for signal in SIGNALS:
        lead = f"{signal.name:<{name_width}}{signal.points:>6g}  {signal.scope:<10}"
        print(
            textwrap.fill(
                signal.description, width=100, initial_indent=lead, subsequent_indent=indent
            )
        )
    print(
        "\npoints: what a signal adds to the 0-100 score at full strength (times its policy "
        "weight);\nscope: identity = one principal's own behaviour, cohort = across identities"
    )
    return 0


def _trace_find(args: argparse.Namespace) -> int:
    from guardrail.provenance import command

    return command.find(args)


def _trace_receipt(args: argparse.Namespace) -> int:
    from guardrail.provenance import receipt

    try:
        key = _chain_key(args)
    except PolicyError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return receipt.BAD_INPUT
    except GuardrailError as exc:  # a secret that cannot be read
        print(f"guardrail: {exc}", file=sys.stderr)
        return receipt.BAD_INPUT
    if isinstance(key, str):
        print(key, file=sys.stderr)
        return receipt.BAD_INPUT
    return receipt.receipt(args, key)


def _trace_seed(args: argparse.Namespace) -> int:
    from guardrail.provenance import seeds

    return seeds.run(args)


def _trace_public_key(args: argparse.Namespace) -> int:
    from guardrail.provenance.signatures import public_key_text

    signing = Policy.from_yaml(args.policy).provenance.signatures
    if signing is None:
        print(f"{args.policy}: the policy has no provenance.signatures", file=sys.stderr)
        return 1
    print(public_key_text(resolve_secret(signing.key), signing.key_id, pem=args.pem))
    return 0


def _trace_verify_response(args: argparse.Namespace) -> int:
    from guardrail.provenance import verify_response

    if args.policy is None:
        return verify_response.run(args, None, None)
    signing = Policy.from_yaml(args.policy).provenance.signatures
    if signing is None:
        print(f"{args.policy}: the policy has no provenance.signatures", file=sys.stderr)
        return verify_response.BAD_INPUT
    return verify_response.run(args, resolve_secret(signing.key), signing.key_id)


def _simulate(args: argparse.Namespace) -> int:
    return simulate_command.run(args)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="guardrail", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="validate policy files; exit 1 with every error")
    check.add_argument("policies", nargs="+", metavar="POLICY")
    check.set_defaults(run=_check)

    schema = commands.add_parser("schema", help="print the policy's JSON Schema")
    schema.set_defaults(run=_schema)

    hashing = commands.add_parser("hash-key", help="print the keyed hash an API key is logged as")
    hashing.add_argument("--policy", required=True, metavar="POLICY")
    hashing.add_argument("key", metavar="KEY")
    hashing.set_defaults(run=_hash_key)

    routes = commands.add_parser(
        "routes",
        help="list an app's routes and the policy route that guards each (or UNGUARDED)",
        description="Imports the app (Starlette, FastAPI, Litestar, Quart, Flask) and lists "
        "each of its routes and methods with the policy route that decides it; then the "
        "policy routes that match no route of the app.",
    )
    routes.add_argument("policy", metavar="POLICY")
    routes.add_argument("--app", required=True, metavar="MODULE:APP", help="e.g. myapp.main:app")
    routes.add_argument(
        "--strict", action="store_true", help="exit 1 when a route taking POST is unguarded"
    )
    routes.add_argument("--json", action="store_true", help="machine-readable output")
    routes.set_defaults(run=_routes)

    signals = commands.add_parser("signals", help="list the built-in risk signals")
    signals.set_defaults(run=_signals)

    simulate = commands.add_parser(
        "simulate",
        help="run seeded benign and campaign traffic through the policy; report per population",
        description="Simulated days of benign users and distillation campaigns, sent through "
        "guardrail and the app on a simulated clock; reports what each population was served, "
        "limited, throttled, challenged and blocked.",
    )
    simulate_command.add_arguments(simulate)
    simulate.set_defaults(run=_simulate)

    trail = commands.add_parser("audit", help="read the audit trail").add_subparsers(
        dest="audit_command", required=True, metavar="ACTION"
    )
    trails = (
        "a file (its rotated FILE.N included), a glob ('audit-*.jsonl'), or a Redis stream "
        "(redis://host:6379/0?stream=guardrail:audit); env:NAME or file:PATH reads it from "
        "there, keeping a password off the command line"
    )
    tail = trail.add_parser("tail", help="readable lines merged by time, rotated files included")
    tail.add_argument("trails", nargs="+", metavar="TRAIL", type=location_argument, help=trails)
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    tail.add_argument("-n", "--lines", type=int, default=None, help="only the last N records")
    tail.set_defaults(run=_audit_tail)
    summary = trail.add_parser("summary", help="decisions by action, top subjects and signals")
    summary.add_argument("trails", nargs="+", metavar="TRAIL", type=location_argument, help=trails)
    summary.add_argument("--since", metavar="DURATION", help="only the last 1h, 30m, 7d …")
    summary.add_argument("--json", action="store_true", help="machine-readable output")
    summary.set_defaults(run=_audit_summary)
    page = trail.add_parser(
        "report",
        help="one self-contained HTML page of plots: decisions over time, scores, top "
        "subjects, networks and client builds, token spend",
    )
    page.add_argument("trails", nargs="+", metavar="TRAIL", type=location_argument, help=trails)
    page.add_argument("--html", required=True, metavar="OUT", help="the page to write")
    page.add_argument("--since", metavar="DURATION", help="only the last 1h, 30m, 7d …")
    page.add_argument("--top", type=int, default=12, metavar="N", help="rows per table (12)")
    page.set_defaults(run=_audit_report)
    verify = trail.add_parser(
        "verify",
        help="check each writer's hash chain; exit 1 at the first break",
        description="Walks each writer's chain. A keyed chain (audit.chain_key) is checked "
        "with its key (--policy or --key); without it, only its structure is, and the exit "
        "code is 3, not 0. Exit 0: intact (a chain that ends unsealed is a warning); 1: broken.",
    )
    verify.add_argument("trails", nargs="+", metavar="TRAIL", type=location_argument, help=trails)
    keys = verify.add_mutually_exclusive_group()
    keys.add_argument("--policy", metavar="POLICY", help="the key its audit.chain_key names")
    keys.add_argument("--key", metavar="REF", help="the chain key: env:NAME or file:PATH")
    verify.set_defaults(run=_audit_verify)

    trace = commands.add_parser(
        "trace", help="output provenance: which subjects were served a suspect dataset"
    ).add_subparsers(dest="trace_command", required=True, metavar="ACTION")
    find = trace.add_parser(
        "find",
        help="rank the subjects whose served outputs the suspect texts reproduce",
        description="Reads suspect texts (a leaked dataset, a suspect model's outputs) and "
        "ranks the subjects of a provenance index by how many of the texts match what they "
        "were served. Exit 0 when a subject is named, 1 when nobody is beyond chance, 2 when "
        "the input is refused.",
    )
    from guardrail.provenance.command import add_find_arguments

    add_find_arguments(find)
    find.set_defaults(run=_trace_find)
    receipt = trace.add_parser(
        "receipt",
        help="what the audit trail says was served for one request, and whether it verifies",
        description="Finds the record of REQUEST_ID in the trails, verifies its trail's chain "
        "(with the key: --policy or --key) before and after it, and prints who was served "
        "what (the body's SHA-256 and size), when, and the record's link. Exit 0 verified; 1 "
        "not found, no receipt, --body does not match, or the chain is broken; 2 input "
        "refused; 3 a keyed chain read without its key.",
    )
    from guardrail.provenance.receipt import add_receipt_arguments

    add_receipt_arguments(receipt)
    receipt.set_defaults(run=_trace_receipt)
    seed = trace.add_parser(
        "seed",
        help="a subject's watermark seed (provenance.watermark), or who a detected seed names",
        description="Prints the seed the policy's provenance.watermark key gives SUBJECT; or, "
        "with --seed and --audit, the principals of the trails that were given that seed. "
        "Exit 0 printed or named, 1 nobody has that seed, 2 input refused.",
    )
    from guardrail.provenance.seeds import add_seed_arguments

    add_seed_arguments(seed)
    seed.set_defaults(run=_trace_seed)
    public = trace.add_parser(
        "public-key",
        help="the public key that verifies signed responses (provenance.signatures), to publish",
        description="Prints the public half of provenance.signatures.key as a JWK (RFC 8037) "
        "with its kid, the keyid its signatures carry; --pem for SubjectPublicKeyInfo PEM.",
    )
    public.add_argument("--policy", required=True, metavar="POLICY")
    public.add_argument("--pem", action="store_true", help="PEM instead of a JWK")
    public.set_defaults(run=_trace_public_key)
    check_response = trace.add_parser(
        "verify-response",
        help="check a saved response's signature (provenance.signatures) and name its request",
        description="Verifies the RFC 9421 signature and RFC 9530 Content-Digest of a response "
        "saved with curl -D HEADERS -o BODY, with the published key (--public-key, PEM or JWK) "
        "or the policy's, and prints the guardrail-request-id it covers. Exit 0 verified, 1 "
        "not, 2 input refused.",
    )
    from guardrail.provenance.verify_response import add_arguments

    add_arguments(check_response)
    check_response.set_defaults(run=_trace_verify_response)

    tune = commands.add_parser(
        "calibrate",
        help="propose threshold scores from an observe-mode trail",
        description="Reads an observe-mode trail (audit.sample_allowed: 1.0) and proposes the "
        "policy's thresholds so that at most --target of its principals would have been "
        "mitigated; lists who would have been, and why.",
    )
    tune.add_argument("trails", nargs="+", metavar="TRAIL", type=location_argument, help=trails)
    tune.add_argument(
        "--target", default="0.3%", help="share of principals mitigated at most (0.3%% or 0.003)"
    )
    tune.add_argument("--policy", metavar="POLICY", help="keep its bands, tiers and hysteresis")
    tune.add_argument(
        "--allow-enforce", action="store_true", help="read a trail written in mode enforce too"
    )
    tune.add_argument("--json", action="store_true", help="machine-readable output")
    tune.set_defaults(run=_calibrate)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except PolicyError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return 1
    except (GuardrailError, OSError, ValueError) as exc:
        print(f"guardrail: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
