"""benchmarks/load.py end to end against real uvicorn workers: every configuration asked for gets
a ratio, with one worker and with several, and nothing it started outlives it, interrupted or
not. Nothing timed is asserted: the figures depend on the machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOAD = ROOT / "benchmarks" / "load.py"

# (generator, modes): the Python generator, which runs wherever the tests do. (wrk, where
# installed, goes through the same runner; it is not asked of the test machine.)
GENERATORS = [pytest.param("python", [1, 2], id="python")]


def marked() -> tuple[dict[str, str], str]:
    """An environment whose mark every process the benchmark starts inherits."""
    mark = uuid.uuid4().hex
    return {**os.environ, "GUARDRAIL_LOAD_TEST_MARK": mark}, mark


def left_behind(mark: str) -> list[int]:
    """Live processes carrying ``mark`` in their environment (Linux: /proc)."""
    if not Path("/proc").is_dir():
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"GUARDRAIL_LOAD_TEST_MARK={mark}".encode() in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize(("generator", "modes"), GENERATORS)
def test_every_configuration_gets_a_ratio_in_each_mode(generator: str, modes: list[int]) -> None:
    env, mark = marked()
    command = [sys.executable, str(LOAD), "--duration", "0.5", "--warmup", "0.3", "--rounds", "1"]
    command += ["--configs", "bare,memory", "--generator", generator]
    command += ["--workers", ",".join(map(str, modes))]
    done = subprocess.run(
        [*command, "--json"], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["cores"] >= 1
    assert report["generator"]["name"].startswith(generator)
    assert [mode["workers"] for mode in report["modes"]] == modes
    for mode in report["modes"]:
        rows = {row["config"]: row for row in mode["configs"]}
        assert list(rows) == ["bare", "memory"]
        assert rows["bare"]["ratio"] == 1.0
        assert rows["memory"]["ratio"] > 0
        for row in rows.values():
            (run,) = row["runs"]
            assert run["requests"] > 0
            assert (run["non_2xx"], run["errors"], run["problems"]) == (0, 0, [])
            if sys.platform == "linux":  # read from /proc: one count per worker
                assert len(run["spread"]) == mode["workers"]
    assert left_behind(mark) == []


def test_an_interrupted_run_leaves_nothing_behind() -> None:
    env, mark = marked()
    command = [sys.executable, str(LOAD), "--duration", "0.5", "--warmup", "0.3", "--rounds", "1"]
    command += ["--configs", "bare,memory", "--workers", "2", "--generator", "python"]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as process:
        try:
            assert process.stderr is not None
            for line in process.stderr:  # the first run done: the second one's workers start
                if b"round 1/1, bare" in line:
                    break
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 130
        finally:
            if process.poll() is None:
                process.kill()
    assert left_behind(mark) == []
