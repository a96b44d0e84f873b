"""Issue 12, item 5: without lifespan events (``uvicorn --lifespan off``, Daphne) the audit trail
lost its last records when the server stopped: the refusals held to be counted in one record,
and a record still queued when the process ended.

Fixed outcome: a real server without lifespan, stopped by SIGTERM (or Ctrl-C) after N requests,
leaves a trail that accounts for all N decisions, in one intact hash chain.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest

from guardrail.audit import verify

from ._audit_servers import policy_file, server, stop

BURST = 2


def _decisions(trail: Path) -> int:
    if not trail.exists():
        return 0
    records = [json.loads(line) for line in trail.read_text().splitlines() if line]
    return sum(record.get("repeated", 1) for record in records)


@pytest.mark.parametrize(
    ("kind", "args", "sig", "requests"),
    [
        ("uvicorn", ("--lifespan", "off"), signal.SIGTERM, 1),
        ("uvicorn", ("--lifespan", "off"), signal.SIGTERM, 10),
        ("uvicorn", ("--lifespan", "off"), signal.SIGINT, 10),
        ("daphne", (), signal.SIGTERM, 10),
    ],
    ids=["uvicorn-sigterm-1", "uvicorn-sigterm-10", "uvicorn-sigint-10", "daphne-sigterm-10"],
)
def test_every_decision_is_on_disk_after_the_server_stops(
    tmp_path: Path, kind: str, args: tuple[str, ...], sig: int, requests: int
) -> None:
    trail = tmp_path / "audit.jsonl"
    log = tmp_path / "server.log"
    policy = policy_file(tmp_path, burst=BURST)
    with server(kind, policy, f"file://{trail}", *args, log=log) as (url, process):
        with httpx.Client(base_url=url, timeout=10) as client:
            statuses = [client.get(f"/page/{n}").status_code for n in range(requests)]
        served = min(requests, BURST)
        assert statuses == [200] * served + [429] * (requests - served)
        stop(process, sig)
    assert _decisions(trail) == requests, f"server log:\n{log.read_text()[-3000:]}"
    ok, report = verify(trail)
    assert ok, report
