"""Real processes for tests/deploy/test_fleet_proxy.py: the README's deployment snippets run
as written, under the ``uvicorn`` command line, and a reverse proxy hop on loopback.

``uvicorn_cli(directory, *args)`` runs ``python -m uvicorn app:app *args`` in ``directory``
(where the snippet's ``app.py`` and ``guardrail.yaml`` are; this worktree's ``src`` first on
the path) until a request to ``/healthz`` is answered, and stops it with SIGINT (uvicorn's
graceful shutdown, workers included), keeping what it printed.

``proxy(upstream)`` is the hop nginx makes with ``proxy_set_header X-Forwarded-For
$proxy_add_x_forwarded_for``: it appends the address its client connected from to the
X-Forwarded-For the client sent, and connects to ``upstream`` from ``PROXY_ADDRESS``, an address
of its own on loopback, as a proxy on another host would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from starlette.types import Receive, Scope, Send

from adversarial.conftest import served

from redis_servers import free_port

ROOT = Path(__file__).resolve().parents[2]
#: The proxy's own address, as the app's server sees it (all of 127.0.0.0/8 is loopback).
PROXY_ADDRESS = "127.0.0.2"


@dataclass
class Process:
    url: str
    process: asyncio.subprocess.Process
    output: list[bytes] = field(default_factory=list)

    @property
    def log(self) -> str:
        return b"".join(self.output).decode(errors="replace")


@asynccontextmanager
async def uvicorn_cli(directory: Path, *args: str) -> AsyncIterator[Process]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "FORWARDED_ALLOW_IPS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env["GUARDRAIL_SECRET"] = "deploy-test-secret"
    command = [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1"]
    process = await asyncio.create_subprocess_exec(
        *command,
        "--port",
        str(port),
        *args,
        cwd=directory,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    running = Process(f"http://127.0.0.1:{port}", process)
    reader = asyncio.create_task(_drain(running))
    try:
        async with httpx.AsyncClient(base_url=running.url) as http, asyncio.timeout(30):
            while True:  # a real server process coming up, not test time
                if process.returncode is not None:
                    await reader
                    raise AssertionError(f"uvicorn exited at startup:\n{running.log}")
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        yield running
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()
        await reader


async def _drain(running: Process) -> None:
    stdout = running.process.stdout
    assert stdout is not None
    async for line in stdout:
        running.output.append(line)


@asynccontextmanager
async def proxy(upstream: str) -> AsyncIterator[str]:
    """A reverse proxy to ``upstream`` on loopback; yields its URL."""
    transport = httpx.AsyncHTTPTransport(local_address=PROXY_ADDRESS)
    async with httpx.AsyncClient(base_url=upstream, transport=transport) as forward:

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                return
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            headers = [
                (k, v) for k, v in scope["headers"] if k not in (b"host", b"x-forwarded-for")
            ]
            sent = [v for k, v in scope["headers"] if k == b"x-forwarded-for"]
            peer = scope["client"][0].encode()
            headers.append((b"x-forwarded-for", b", ".join([*sent, peer])))
            reply = await forward.request(
                scope["method"], scope["path"], headers=headers, content=body
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": reply.status_code,
                    "headers": [
                        (k.encode(), v.encode())
                        for k, v in reply.headers.items()
                        if k not in ("content-length", "transfer-encoding", "connection")
                    ],
                }
            )
            await send({"type": "http.response.body", "body": reply.content})

        # the proxy's own server sees its clients' real addresses
        async with served(app, proxy_headers=False, lifespan="off") as url:
            yield url


def client_from(address: str, base_url: str) -> httpx.AsyncClient:
    """A client whose connections come from ``address`` (one of loopback's)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=base_url, transport=transport)
