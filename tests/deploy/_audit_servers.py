"""Real server processes for the audit deployments of issue 12 (items 5, 7, 8, 9): uvicorn (with
``--lifespan off``, ``--workers 2``) and Daphne serving ``tests/deploy/_audit_app.py``, with this
worktree's ``src`` first on the path."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redis_servers import free_port

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.deploy._audit_app:app"

POLICY = """
version: 1
secret: env:GUARDRAIL_TEST_SECRET
routes:
  - name: pages
    match: {path: /}
    limits:
      - {per: ip, rate: 1/hour, burst: %(burst)d}
audit:
  sample_allowed: 1.0
  rotate: {max_bytes: %(max_bytes)d, keep: 50}
"""


def policy_file(directory: Path, burst: int = 100_000, max_bytes: int = 100_000_000) -> Path:
    """The policy above, written to ``directory``: every request recorded; past ``burst`` a
    client is refused, and its refusals after the first are counted in one held record."""
    path = directory / "policy.yaml"
    path.write_text(POLICY % {"burst": burst, "max_bytes": max_bytes})
    return path


@contextmanager
def server(
    kind: str, policy: Path, audit: str, *args: str, log: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``kind`` (``uvicorn`` or ``daphne``) serving the audit app on a free port; yields its URL
    and process. Stopped with SIGKILL on the way out if the test did not stop it."""
    port = free_port()
    if kind == "uvicorn":
        command = ["-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", str(port), *args]
    elif kind == "daphne":
        command = ["-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *args, APP]
    else:
        raise AssertionError(kind)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), str(ROOT / "tests")]),
        "GUARDRAIL_TEST_POLICY": str(policy),
        "GUARDRAIL_TEST_AUDIT": audit,
    }
    output = open(log or os.devnull, "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, *command], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
    )
    try:
        if not wait_for_port(port, 20.0):
            raise AssertionError(f"{kind} did not listen on {port}: {_read(log)}")
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        output.close()


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
    """Sends ``sig`` and waits for the process to end; its return code."""
    process.send_signal(sig)
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"the server did not stop within {timeout}s of {sig}")
        time.sleep(0.05)  # waiting for a real process to exit
    return process.returncode


def wait_for_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)  # waiting for a real server process to come up
    return False


def _read(log: Path | None) -> str:
    return log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
