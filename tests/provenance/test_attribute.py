"""Attribution on a small population: the leaking account first, nobody for unserved text."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardrail.provenance.attribute import attribute
from guardrail.provenance.index import ProvenanceIndex
from guardrail.simulate import leaks

from .conftest import ACCOUNTS, leaked


@pytest.mark.parametrize("account", [ACCOUNTS[0], ACCOUNTS[2], ACCOUNTS[3]], ids=str)
def test_a_leak_names_its_account_first_not_its_siblings(
    small_index: ProvenanceIndex, account: leaks.LeakAccount
):
    result = attribute(small_index, leaked(account, 60, seed=account.index))
    assert result.ranked[0].subject == account.subject
    assert [e.subject for e in result.named] == [account.subject]
    top = result.ranked[0]
    assert top.texts >= 20 and 0.1 < top.mean_similarity <= top.max_similarity <= 1
    assert top.first <= top.last


def test_texts_never_served_attribute_to_nobody(small_index: ProvenanceIndex):
    for seed in range(3):
        result = attribute(small_index, leaks.never_served(100 + seed, 60))
        assert result.named == ()


def test_a_mixed_leak_ranks_every_account(small_index: ProvenanceIndex):
    members = ACCOUNTS[:3]
    texts = [text for account in members for text in leaked(account, 25, seed=9)]
    result = attribute(small_index, texts)
    assert {e.subject for e in result.ranked[:3]} == {a.subject for a in members}


def test_the_json_shape(small_index: ProvenanceIndex):
    data = attribute(small_index, leaked(ACCOUNTS[0], 30)).as_dict(top=2)
    assert set(data) == {"suspects", "sketched", "rule", "named", "ranked"}
    assert data["suspects"] == 30 and len(data["ranked"]) <= 2
    assert set(data["ranked"][0]) == {
        "subject",
        "texts_matched",
        "entries",
        "mean_similarity",
        "max_similarity",
        "first_seen",
        "last_seen",
    }


def test_an_index_ranks_as_it_does_once_saved_and_read_back(
    small_index: ProvenanceIndex, index_file: Path
):
    """Growing by doubling leaves empty slots, which a saved index does not have: what is
    counted over the index (its common bin values) reads the live slots only."""
    assert small_index.slots > len(small_index)  # the fixture has empty slots to ignore
    loaded = ProvenanceIndex.load(index_file)
    assert small_index.live_columns() == loaded.columns()
    for texts in (leaked(ACCOUNTS[1], 40, seed=5), leaks.never_served(7, 60)):
        mine, theirs = attribute(small_index, texts), attribute(loaded, texts)
        assert [(e.subject, e.texts) for e in mine.ranked] == [
            (e.subject, e.texts) for e in theirs.ranked
        ]
