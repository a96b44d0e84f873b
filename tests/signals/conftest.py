"""A risk engine over each store, and a driver that feeds it crafted request streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from guardrail.backends import Storage, risk_engine, storage_from_uri
from guardrail.limits import compile_route
from guardrail.policy import Policy

from .streams import BASE_POLICY, Driver

STORES = ["memory", "redis"]


@pytest.fixture(params=STORES)
def store_uri(request: pytest.FixtureRequest) -> str:
    """An empty store of each kind; a generous timeout for a loaded 2-core CI machine."""
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue("redis_url")) + "?timeout=5"


@pytest.fixture
async def make_driver(store_uri: str) -> AsyncIterator[Any]:
    storages: list[Storage] = []
    stores: list[Any] = []  # the engines' risk stores: a shared one flushes in the background
    uri = store_uri

    async def make(policy_text: str = BASE_POLICY) -> Driver:
        policy = Policy.from_string(policy_text)
        storage = storage_from_uri(uri, max_subjects=policy.max_subjects)
        storages.append(storage)
        await storage.start()
        engine = risk_engine(policy, storage, fallback=False)
        await engine.store.start()
        stores.append(engine.store)
        return Driver(engine, compile_route(policy.routes[0]))

    yield make
    for store in stores:
        await store.close()
    for storage in storages:
        await storage.close()
