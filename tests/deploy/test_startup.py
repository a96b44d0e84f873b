"""Issue 12, item 3: a policy (or anything else guardrail needs) that is broken must stop the
server, in every documented form, under every documented server.

Starlette and FastAPI build ``add_middleware(Guardrail, ...)`` and ``Middleware(Guardrail, ...)``
lazily, on the first ASGI call: the lifespan startup. Before the fix the error escaped there,
uvicorn and Hypercorn took it for "lifespan unsupported", started, and answered every request
500. Now: ``lifespan.startup.failed`` carrying the whole error, and the server exits non-zero.
Where no lifespan runs (Daphne, ``uvicorn --lifespan off``) every request is answered 503
problem+json naming the error, which is logged once at ERROR in full: never a bare 500, never
served unguarded.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tests.deploy._frameworks_servers import POLICY, exited, running, write_policy

#: The forms a framework builds on the app's first call (add_middleware, Middleware(...)); the
#: wrapped forms (Guardrail(app, ...)) raise at import: tests/deploy/test_frameworks.py.
LAZY = ["starlette", "starlette_list", "fastapi"]

#: Two errors at once: each must reach the operator.
BROKEN = (
    POLICY.read_text()
    .replace("rate: 60/hour", "rate: sixty an hour")
    .replace("score: 95", "score: 195")
)


def broken_policy(tmp_path: Path, text: str = BROKEN) -> Path:
    return write_policy(tmp_path, text)[0]


def _refused_in_full(log: str, policy: Path) -> None:
    assert "policy refused, 2 errors" in log, log
    assert f"{policy}:12: routes[1].limits[0].rate: 'sixty an hour'" in log, log
    assert "thresholds[0].score: 195" in log, log


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
@pytest.mark.parametrize("app", LAZY)
def test_broken_policy_fails_startup(tmp_path: Path, app: str, server: str) -> None:
    policy = broken_policy(tmp_path)
    served = exited(app, server, policy)
    # before the fix (lazy forms): "lifespan unsupported", served, and answered 500
    assert served.answered is None, served.log
    # Hypercorn 0.18 stops but exits 0 whatever stopped it (pgjones/hypercorn#269, PR #372)
    assert served.process.returncode != 0 or server == "hypercorn", served.log
    _refused_in_full(served.log, policy)
    if server == "uvicorn":
        assert "Application startup failed. Exiting." in served.log, served.log


def test_broken_policy_stops_every_worker(tmp_path: Path) -> None:
    policy = broken_policy(tmp_path)
    served = exited("fastapi", "uvicorn", policy, "--workers", "2")
    assert served.answered is None, served.log  # before the fix: 500
    # uvicorn's supervisor stops, though it exits 0 then, like Hypercorn's
    assert served.process.returncode is not None, served.log
    assert served.log.count("Application startup failed. Exiting.") >= 1, served.log
    _refused_in_full(served.log, policy)


@pytest.mark.parametrize(
    ("server", "extra"),
    [("daphne", ()), ("uvicorn", ("--lifespan", "off"))],
    ids=["daphne", "uvicorn-lifespan-off"],
)
@pytest.mark.parametrize("app", LAZY)
def test_broken_policy_without_lifespan_answers_503(
    tmp_path: Path, app: str, server: str, extra: tuple[str, ...]
) -> None:
    policy = broken_policy(tmp_path)
    with running(app, server, policy, *extra) as served, httpx.Client(base_url=served.url) as c:
        answers = [
            c.post("/v1/chat/completions"),
            c.post("/v1/chat/completions"),
            c.get("/healthz"),  # even what the policy exempts: the policy is not known
            c.get("/.guardrail/verify"),
        ]
    statuses = [a.status_code for a in answers]
    assert statuses == [503, 503, 503, 503], statuses  # before the fix: [500, 500, 500, 500]
    body = answers[0].json()
    assert answers[0].headers["content-type"] == "application/problem+json"
    assert body["type"] == "guardrail-not-started"
    assert "PolicyError" in body["detail"]
    assert "sixty" not in body["detail"]  # the details are the operator's: in the log
    log = served.log
    _refused_in_full(log, policy)
    assert log.count("policy refused, 2 errors") == 1, log  # once, not once a request


CONSTRUCTION_ERRORS = {
    "secret not set": (
        POLICY.read_text().replace("env:GUARDRAIL_SECRET", "env:GUARDRAIL_DEPLOY_UNSET"),
        "environment variable 'GUARDRAIL_DEPLOY_UNSET' is not set",
    ),
    "meter not importable": (
        POLICY.read_text().replace(
            "    limits:\n", "    inspect: nowhere.meters:Meter\n    limits:\n", 1
        ),
        "No module named 'nowhere'",
    ),
    "storage not understood": (
        POLICY.read_text().replace("version: 1", "version: 1\nstorage: memcached://cache:11211"),
        "storage: 'memcached://cache:11211'",
    ),
}


@pytest.mark.parametrize("error", CONSTRUCTION_ERRORS)
def test_whatever_guardrail_needs_fails_startup(tmp_path: Path, error: str) -> None:
    text, said = CONSTRUCTION_ERRORS[error]
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    served = exited("fastapi", "uvicorn", policy)
    assert (served.answered, served.process.returncode != 0) == (None, True), served.log
    assert said in served.log, served.log
