"""Real Redis processes for the tests: a plain server, a Sentinel, a Cluster.

Missing binaries skip, or fail when GUARDRAIL_REQUIRE_REDIS=1 (``make test`` and CI set it).
(Not in conftest.py so that test modules can import it by a name no conftest shares.)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_ping(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return True
        except OSError:
            pass
        time.sleep(0.02)  # waiting for a real server process to come up, not test time
    return False


def redis_binary(name: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        message = f"{name} not found (apt-get install redis-server redis-tools)"
        if os.environ.get("GUARDRAIL_REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    pytest.fail("no free port pair for a cluster node")


class Server:
    """One redis-server process on a free port; extra arguments configure it."""

    def __init__(self, workdir: Path, *args: str, port: int | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [
                redis_binary("redis-server"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_for_ping(self.port):
            self.stop()
            pytest.fail(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


class Cluster:
    """Three masters, no replicas: the smallest real Redis Cluster."""

    def __init__(self, workdir: Path) -> None:
        self.nodes: list[Server] = []
        try:
            for index in range(3):
                self.nodes.append(
                    Server(
                        workdir / f"node{index}",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                        port=free_cluster_port(),
                    )
                )
            subprocess.run(
                [
                    redis_binary("redis-cli"),
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{node.port}" for node in self.nodes),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self._wait_ok()
        except BaseException:
            self.stop()
            raise
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def _wait_ok(self) -> None:
        import redis

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = []
            for node in self.nodes:
                with redis.Redis(port=node.port) as client:
                    states.append(client.cluster("INFO")["cluster_state"])
            if all(state == "ok" for state in states):
                return
            time.sleep(0.05)  # the nodes gossip the new slot map on the real clock
        pytest.fail("redis cluster did not reach cluster_state:ok")

    def reset(self) -> None:
        import redis

        for node in self.nodes:
            with redis.Redis(port=node.port) as client:
                client.flushall()
        self.reset_stats()

    def reset_stats(self) -> None:
        import redis

        for node in self.nodes:
            with redis.Redis(port=node.port) as client:
                client.config_resetstat()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class SentinelServer:
    """A real Sentinel watching the session's redis-server under the name ``guardrail``."""

    def __init__(self, workdir: Path, master_port: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = workdir / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor guardrail 127.0.0.1 {master_port} 1\n"
        )
        self.process = subprocess.Popen(
            [redis_binary("redis-server"), str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_for_ping(self.port):
            self.stop()
            pytest.fail(f"redis sentinel did not start on port {self.port}")
        self.url = f"redis+sentinel://127.0.0.1:{self.port}/guardrail"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
