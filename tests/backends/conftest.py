"""Every storage behind one fixture, so the conformance suite runs against each of them.

``storage_uri`` names a fresh, empty store of each kind: memory, the session's real
redis-server (tests/conftest.py), and a real 3-master Redis Cluster started here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from guardrail.backends import Storage, storage_from_uri

from redis_servers import Cluster, SentinelServer

BACKENDS = ["memory", "redis", "sentinel", "cluster"]

settings.register_profile("backends-memory", max_examples=300, deadline=None)
settings.register_profile(
    "backends-redis",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="session")
def redis_sentinel(
    redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SentinelServer]:
    sentinel = SentinelServer(tmp_path_factory.mktemp("sentinel"), redis_server.port)
    yield sentinel
    sentinel.stop()


@pytest.fixture
def sentinel_url(redis_sentinel: SentinelServer, redis_url: str) -> str:
    """The session's redis-server (flushed by ``redis_url``), found through Sentinel."""
    return redis_sentinel.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: Cluster) -> str:
    """The session's cluster, every master flushed."""
    redis_cluster.reset()
    return redis_cluster.url


@pytest.fixture(params=BACKENDS)
def storage_uri(request: pytest.FixtureRequest) -> str:
    """A URI naming an empty store, once per backend."""
    if request.param == "memory":
        return "memory://"
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
async def storage(storage_uri: str) -> AsyncIterator[Storage]:
    # These tests are about what is decided, not how fast: a generous timeout keeps a loaded
    # CI machine (2 cores, 250 concurrent charges) from turning a slow reply into a failure.
    if storage_uri != "memory://":
        storage_uri += ("&" if "?" in storage_uri else "?") + "timeout=5"
    store = storage_from_uri(storage_uri)
    await store.start()
    yield store
    await store.close()
