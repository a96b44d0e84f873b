"""A small provenance population: campaign siblings sharing scaffolds, and benign accounts."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from guardrail.provenance.index import ProvenanceIndex
from guardrail.simulate import leaks

SEED = 3
ACCOUNTS = (
    [leaks.LeakAccount("campaign-a", i, 150) for i in range(3)]
    + [leaks.LeakAccount("campaign-b", i, 100) for i in range(2)]
    + [leaks.LeakAccount("benign", i, 30) for i in range(20)]
)


@pytest.fixture(scope="session")
def small_index() -> ProvenanceIndex:
    index = ProvenanceIndex(capacity=5000)
    for account in ACCOUNTS:
        rng = random.Random(account.subject)
        for text in leaks.outputs(SEED, account):
            index.add(account.subject, text, 1_800_000_000 + rng.uniform(0, 86400))
    return index


@pytest.fixture(scope="session")
def index_file(small_index: ProvenanceIndex, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("provenance") / "index.grprov"
    small_index.save(path)
    return path


def leaked(account: leaks.LeakAccount, count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    outputs = list(leaks.outputs(SEED, account))
    return [leaks.perturb(text, rng) for text in rng.sample(outputs, count)]
