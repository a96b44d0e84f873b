"""``guardrail simulate`` as a user runs it: progress on a terminal only, and outside the
repository (no examples/ to import) on the example policy the package carries and the
stand-in model server, saying so."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from guardrail.cli import main
from guardrail.simulate import command

REPO = Path(__file__).resolve().parents[2]
QUICK = ["--scale", "0.03", "--days", "0.3"]


def guardrail_env() -> dict[str, str]:
    """This checkout's guardrail and nothing else of it on the path: no examples/."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GUARDRAIL_SECRET")}
    env["PYTHONPATH"] = str(REPO / "src")
    return env


def test_outside_the_repository_it_runs_on_the_stand_in_and_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "guardrail", "simulate", "--json", *QUICK],
        cwd=tmp_path,
        env=guardrail_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)["run"]  # stdout is the JSON and nothing else
    assert run["app"] == command.STAND_IN
    assert run["policy"] == str(REPO / "examples" / "policy.yaml")  # the checkout's, here
    assert run["requests"] > 100 and run["app_errors"] == 0
    assert run["audit_records"] > 0
    notes = done.stderr.splitlines()
    assert notes == [
        f"guardrail simulate: note: no examples/policy.yaml here: using the example policy "
        f"{REPO / 'examples' / 'policy.yaml'}",
        "guardrail simulate: note: the example app (examples/) is importable only from the "
        "repository root; simulating against the built-in stand-in model server "
        "(guardrail.simulate.model_app) instead, whose answers differ a little from the "
        "example's",
    ]  # and no progress: stderr is not a terminal


def test_outside_the_repository_an_app_the_user_names_is_not_replaced(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "guardrail", "simulate", "--app", "examples.openai_server:x"],
        cwd=tmp_path,
        env=guardrail_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot import 'examples.openai_server'" in done.stderr
    assert "pass --app MODULE:FACTORY" in done.stderr


def test_without_fastapi_the_example_app_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [name for name in sys.modules if name.split(".")[0] in ("fastapi", "examples")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi raises ImportError
    app, note = command.app_for(None)
    assert note is not None and note.startswith(
        "the example app needs fastapi: pip install 'guardrail[demo]'; simulating against "
        "the built-in stand-in model server"
    )
    assert app.__module__ == "guardrail.simulate.model_app"


def test_a_terminal_sees_progress_and_the_json_stays_clean(tmp_path: Path) -> None:
    primary, secondary = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "guardrail", "simulate", "--json", *QUICK],
        cwd=REPO,
        env=guardrail_env(),
        stdout=subprocess.PIPE,
        stderr=secondary,
    ) as process:
        os.close(secondary)
        seen = b""
        while True:  # read as it comes: a full terminal buffer would stall the run
            ready, _, _ = select.select([primary], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the run ended and closed its end
                break
            if not chunk:
                break
            seen += chunk
        out = process.stdout.read() if process.stdout else b""
        assert process.wait(timeout=60) == 0
    os.close(primary)
    assert json.loads(out)["run"]["requests"] > 100
    progress = seen.decode()
    assert "\r  [" in progress and "% " in progress and " requests " in progress
    assert progress.endswith("\r" + " " * 79 + "\r")  # wiped before the result


def test_audit_keeps_one_trail_per_instance_and_the_report_reads_them_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = str(REPO / "examples" / "policy.yaml")
    argv = ["simulate", "--policy", policy, "--json", "--scale", "0.02", "--days", "0.1"]
    assert main([*argv, "--instances", "2", "--audit", str(tmp_path / "sim.jsonl")]) == 0
    records = json.loads(capsys.readouterr().out)["run"]["audit_records"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim-0.jsonl", "sim-1.jsonl"]
    page = tmp_path / "report.html"
    assert main(["audit", "report", str(tmp_path / "sim-*.jsonl"), "--html", str(page)]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"{page}: ") and shown.endswith(" decisions from 2 source(s)\n")
    decisions = int(shown.removeprefix(f"{page}: ").split()[0].replace(",", ""))
    assert decisions >= records > 50  # a record with "repeated": N stands for N
