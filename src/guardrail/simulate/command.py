"""``guardrail simulate`` (and benchmarks/campaign.py): options, set-up, progress, output.

Set-up problems the user fixes with an option (no policy file, an app that cannot be
imported) exit 2 with a message naming the option. Without the options, outside the
repository, the run uses the example policy the package carries and, where the example app
cannot be imported, a stand-in model server, and says so on stderr.

The policy's audit sink is replaced by a file in a temporary directory, removed afterwards
(or by ``--audit PATH``, kept). When the policy keys identities with
``secret: env:NAME`` and NAME is unset, a fixed simulation secret is put in the environment
for the run (and removed after): simulated keys need a stable hash, not a real secret.

Only ``argparse`` and the standard library are imported at module level, so that building the
``guardrail`` parser stays cheap for every other command.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from guardrail.policy import Policy

DEFAULT_POLICY = "examples/policy.yaml"
DEFAULT_APP = "examples.openai_server:build_app"
STAND_IN = "guardrail.simulate.model_app:build_app"
#: Put in the environment for the run when the policy's ``env:`` secret is unset.
SIMULATION_SECRET = "guardrail-simulation-secret-not-for-production"  # noqa: S105
EXIT_SETUP = 2


class SetupError(Exception):
    """Something an option has to fix; exit 2."""


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {text!r}")
    return value


EPILOG = (
    "The policy's audit sink is replaced by a file in a temporary directory (removed after the "
    "run; --audit PATH keeps it). If the policy reads its secret from an unset environment "
    "variable (secret: env:GUARDRAIL_SECRET), a fixed simulation secret is set for the run "
    "only. Traffic starts "
    "on Monday 2026-11-02 00:00 UTC; the same seed, days and scale give the same requests."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``guardrail simulate`` (shared with benchmarks/campaign.py)."""
    parser.epilog = EPILOG
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--policy",
        metavar="PATH",
        help=f"default {DEFAULT_POLICY}, or outside the repository the example policy the "
        "package carries",
    )
    parser.add_argument(
        "--app",
        metavar="MODULE:FACTORY",
        help=f"a function returning the ASGI app, without guardrail (default {DEFAULT_APP}, "
        "or where it cannot be imported a stand-in model server); the current directory is "
        "searched first",
    )
    parser.add_argument(
        "--days", type=_positive, default=2.0, help="simulated days of traffic (default 2)"
    )
    parser.add_argument(
        "--scale",
        type=_positive,
        default=1.0,
        help="multiplies every population's size (default 1; 0.05 for a quick run)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    parser.add_argument("--storage", metavar="URI", help="override the policy's storage")
    parser.add_argument(
        "--audit",
        metavar="PATH",
        help="keep the run's audit trail at PATH (default: a temporary file, removed), e.g. "
        "for guardrail audit report PATH --html report.html",
    )
    parser.add_argument(
        "--instances",
        type=_at_least_one,
        default=1,
        metavar="N",
        help="guardrail instances (workers) on the one storage, each request sent to one at "
        "random (default 1); with a Redis storage their risk state is shared every "
        "risk.share_every of simulated time",
    )


def policy_path(named: str | None) -> tuple[Path, str | None]:
    """The policy ``--policy`` names (None: the default), and a note when the default was not
    where it was looked for: outside a checkout, the example policy the package carries is
    used instead. A policy the user named is never replaced."""
    spec = named or DEFAULT_POLICY
    path = Path(spec)
    if named is None and not path.is_file():
        here = Path(__file__).resolve()
        # a wheel carries it beside this module; an editable install is a checkout
        for bundled in (here.with_name("example_policy.yaml"), here.parents[3] / DEFAULT_POLICY):
            if bundled.is_file():
                return bundled, f"no {DEFAULT_POLICY} here: using the example policy {bundled}"
    if not path.is_file():
        raise SetupError(
            f"no policy file at {spec}; pass --policy PATH "
            f"(the default, {DEFAULT_POLICY}, is found from the repository root)"
        )
    return path, None


def app_for(named: str | None) -> tuple[Any, str | None]:
    """The app ``--app`` names (None: the default), and a note when it is not that app: where
    the default example cannot be imported (outside the repository, or without FastAPI), the
    stand-in model server of :mod:`guardrail.simulate.model_app`. An app the user named is
    never replaced."""
    if named is not None:
        return load_app(named), None
    _cwd_first()
    try:
        importlib.import_module(DEFAULT_APP.partition(":")[0])
    except ImportError as exc:
        missing = exc.name or ""
        if missing.split(".")[0] == "examples":
            why = "the example app (examples/) is importable only from the repository root"
        else:
            why = f"the example app needs {missing or exc}: pip install 'guardrail[demo]'"
        from guardrail.simulate.model_app import build_app

        return build_app(), (
            f"{why}; simulating against the built-in stand-in model server "
            "(guardrail.simulate.model_app) instead, whose answers differ a little from "
            "the example's"
        )
    return load_app(DEFAULT_APP), None


def _cwd_first() -> None:
    """The current directory searched first, as uvicorn does."""
    cwd = os.getcwd()
    if not sys.path or sys.path[0] != cwd:
        sys.path.insert(0, cwd)


def load_app(spec: str) -> Any:
    """Import ``MODULE:FACTORY`` (current directory first, as uvicorn does) and call it."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SetupError(f"--app {spec!r}: expected MODULE:FACTORY, e.g. --app {DEFAULT_APP}")
    _cwd_first()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SetupError(
            f"cannot import {module_name!r} for the app ({exc}); run from the directory that "
            f"holds it (the repository root for the example) or pass --app MODULE:FACTORY"
        ) from None
    try:
        factory = functools.reduce(getattr, attr.split("."), module)
    except AttributeError:
        raise SetupError(
            f"{module_name} has no {attr!r}; pass --app MODULE:FACTORY naming a function "
            f"that returns the ASGI app"
        ) from None
    if not callable(factory):
        raise SetupError(f"--app {spec}: {attr} is not callable")
    app = factory()
    from guardrail.middleware import Guardrail

    if isinstance(app, Guardrail):
        raise SetupError(
            f"--app {spec} returns an app already wrapped in guardrail; pass the factory of "
            f"the bare app (for the example: --app {DEFAULT_APP})"
        )
    return app


@contextmanager
def simulation_secret(policy: Policy) -> Iterator[str]:
    """Yields where the secret comes from: ``policy``, or ``simulation`` when an unset
    ``env:NAME`` secret was filled with ``SIMULATION_SECRET`` for the duration."""
    ref = policy.secret
    name = ref.removeprefix("env:") if ref and ref.startswith("env:") else ""
    if not name or os.environ.get(name):
        yield "policy"
        return
    os.environ[name] = SIMULATION_SECRET
    try:
        yield "simulation"
    finally:
        os.environ.pop(name, None)


class ProgressBar:
    """``\\r``-updated progress on a terminal, at most ten redraws a second."""

    def __init__(self, out: TextIO, start: float, end: float, days: float) -> None:
        self.out, self.start, self.span, self.days = out, start, end - start, days
        self.began = self.last = time.monotonic()

    def __call__(self, t: float, count: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.1:
            return
        self.last = now
        done = min(1.0, max(0.0, (t - self.start) / self.span))
        filled = int(done * 30)
        self.out.write(
            f"\r  [{'#' * filled}{'.' * (30 - filled)}] {done * 100:3.0f}%  "
            f"day {done * self.days:.2f} of {self.days:g}  {count} requests  "
            f"{now - self.began:.0f} s "
        )
        self.out.flush()

    def close(self) -> None:
        self.out.write("\r" + " " * 79 + "\r")
        self.out.flush()


def run(args: argparse.Namespace) -> int:
    """The ``guardrail simulate`` command; returns the exit code."""
    try:
        return _run(args)
    except SetupError as exc:
        print(f"guardrail simulate: {exc}", file=sys.stderr)
        return EXIT_SETUP


def _run(args: argparse.Namespace) -> int:
    policy_file, policy_note = policy_path(args.policy)
    from guardrail.audit import format_ts
    from guardrail.backends.uri import mask_uri
    from guardrail.policy import Policy
    from guardrail.simulate.populations import EPOCH, window
    from guardrail.simulate.report import render, report
    from guardrail.simulate.runner import Config, proxy_untrusted, simulate

    policy = Policy.from_yaml(policy_file)
    app, app_note = app_for(args.app)
    for note in (policy_note, app_note, proxy_untrusted(policy)):
        if note is not None:
            print(f"guardrail simulate: note: {note}", file=sys.stderr)
    config = Config(seed=args.seed, days=args.days, scale=args.scale)
    end = window(args.seed, args.days).end
    progress: ProgressBar | None = None
    if sys.stderr.isatty():
        progress = ProgressBar(sys.stderr, EPOCH, end, args.days)
    with tempfile.TemporaryDirectory(prefix="guardrail-sim-") as tmp:
        audit_path = _audit_path(args.audit, Path(tmp), args.instances)
        with simulation_secret(policy) as secret_source:
            began = time.perf_counter()
            try:
                tally, count = asyncio.run(
                    simulate(
                        app,
                        policy,
                        config,
                        audit=f"file://{audit_path}",
                        storage=args.storage,
                        progress=progress,
                        instances=args.instances,
                    )
                )
            finally:
                if progress is not None:
                    progress.close()
            wall = time.perf_counter() - began
        records = sum(
            _count_records(Path(str(audit_path).replace("{instance}", str(index))))
            for index in range(args.instances)
        )
    data = report(
        tally,
        {
            "seed": args.seed,
            "days": args.days,
            "scale": args.scale,
            "start": format_ts(EPOCH),
            "end": format_ts(end),
            "policy": str(policy_file),
            "mode": policy.mode,
            "app": STAND_IN if app_note is not None else args.app or DEFAULT_APP,
            "storage": mask_uri(args.storage or policy.storage),
            "instances": args.instances,
            "secret": secret_source,
            "requests": count,
            "wall_seconds": round(wall, 2),
            "requests_per_second": round(count / wall, 1) if wall > 0 else 0.0,
            "audit_records": records,
        },
    )
    print(json.dumps(data, indent=2) if args.json else render(data))
    return 0


def _audit_path(kept: str | None, tmp: Path, instances: int) -> Path:
    """Where the run writes its trail: ``--audit PATH`` (one file per instance when several),
    else the temporary directory. A trail already at PATH is refused: appending a second run
    would chain two simulated weeks into one file."""
    if kept is None:
        return tmp / ("audit.jsonl" if instances == 1 else "audit-{instance}.jsonl")
    path = Path(kept).absolute()  # a file:// URI below: relative paths would read as hosts
    if instances > 1 and "{instance}" not in path.name:
        path = path.with_name(f"{path.stem}-{{instance}}{path.suffix}")
    for index in range(instances):
        taken = Path(str(path).replace("{instance}", str(index)))
        if taken.exists():
            raise SetupError(f"--audit {kept}: {taken} exists; name a new file")
    if not path.parent.is_dir():
        raise SetupError(f"--audit {kept}: no directory {path.parent}")
    return path


def _count_records(path: Path) -> int:
    """Lines of the audit trail the run wrote (rotated files included); 0 when none."""
    from guardrail.audit.reader import iter_lines
    from guardrail.errors import AuditError

    try:
        return sum(1 for _ in iter_lines(path))
    except AuditError:
        return 0
