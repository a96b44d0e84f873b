"""Real server processes for tests/deploy/test_frameworks.py and test_startup.py: an example
app of ``examples/deploy`` under uvicorn, Hypercorn or Daphne, as its README snippet runs it.

``running(...)`` starts the server in a subprocess (this worktree's ``src`` first on the path),
waits until it accepts connections or exits, and yields a ``Server``; leaving the block stops
it with SIGINT (each server's graceful shutdown: lifespan shutdown, audit flushed) and keeps
what it printed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from redis_servers import free_port

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "examples" / "deploy" / "policy.yaml"

#: Each example module and the attribute it serves.
APPS = {
    "starlette": "examples.deploy.starlette_app:app",
    "starlette_list": "examples.deploy.starlette_list_app:app",
    "fastapi": "examples.deploy.fastapi_app:app",
    "litestar": "examples.deploy.litestar_app:app",
    "quart": "examples.deploy.quart_app:app",
    "django": "examples.deploy.django_app:application",
    "litestar_per_handler": "examples.deploy.litestar_per_handler_app:app",
}


def command(server: str, target: str, port: int, *extra: str) -> list[str]:
    py = sys.executable
    if server == "uvicorn":
        return [py, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port), *extra]
    if server == "hypercorn":
        return [py, "-m", "hypercorn", target, "--bind", f"127.0.0.1:{port}", *extra]
    if server == "daphne":
        return [py, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *extra, target]
    raise ValueError(server)


def write_policy(directory: Path, text: str | None = None) -> tuple[Path, Path]:
    """The examples' policy (or ``text``) with its audit trail in ``directory``; returns the
    policy's path and the trail's."""
    trail = directory / "audit.jsonl"
    source = POLICY.read_text() if text is None else text
    policy = directory / "policy.yaml"
    policy.write_text(source.replace("file://guardrail-audit.jsonl", f"file://{trail}"))
    return policy, trail


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    answered: int | None = None  # what a request got, when a server expected to refuse started

    @property
    def log(self) -> str:
        return "".join(self.output)


def _env(policy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDRAIL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env["GUARDRAIL_POLICY"] = str(policy)
    env["GUARDRAIL_SECRET"] = "deploy-test-secret"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def running(
    app: str, server: str, policy: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """``app`` (a key of APPS) under ``server``; the Server's process may already have exited
    (a refused startup): check ``process.returncode``."""
    port = free_port()
    process = subprocess.Popen(
        command(server, APPS[app], port, *extra),
        cwd=ROOT,
        env={**_env(policy), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    served = Server(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + 20
        while not _accepting(port):
            if process.poll() is not None:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{server} did not start serving {app} in 20 s")
            time.sleep(0.05)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            out, _ = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
        served.output.append(out)


def exited(app: str, server: str, policy: Path, *extra: str, **env: str) -> Server:
    """Start ``app`` under ``server`` expecting it to refuse to start: the Server once its
    process has exited, or once it accepted connections (then stopped: it did start)."""
    with running(app, server, policy, *extra, env=env) as served:
        # Hypercorn accepts on its socket before its worker has run the lifespan startup
        with contextlib.suppress(subprocess.TimeoutExpired):
            served.process.wait(timeout=5)
        if served.process.poll() is None:
            served.answered = httpx.post(f"{served.url}/v1/chat/completions").status_code
    return served
