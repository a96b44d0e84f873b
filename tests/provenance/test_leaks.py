"""The simulator's served outputs and their leaked, perturbed copies."""

from __future__ import annotations

import random

from guardrail.provenance.normalize import words
from guardrail.simulate import leaks


def test_outputs_are_the_same_on_every_call():
    account = leaks.LeakAccount("campaign-a", 4, 5)
    assert list(leaks.outputs(1, account)) == list(leaks.outputs(1, account))
    assert list(leaks.outputs(1, account)) != list(leaks.outputs(2, account))


def test_outputs_are_about_a_kilobyte_and_not_near_copies_of_each_other():
    rng = random.Random(2)
    texts = [leaks.served(rng, "campaign-a") for _ in range(30)]
    assert 600 < sum(map(len, texts)) / len(texts) < 1600
    sets = [set(zip(w, w[1:], w[2:], strict=False)) for w in map(words, texts)]
    overlaps = [len(a & b) / len(a | b) for i, a in enumerate(sets) for b in sets[i + 1 :]]
    assert max(overlaps) < 0.35  # scaffolds shared, sentences not


def test_perturb_cuts_rewords_and_reformats():
    rng = random.Random(3)
    text = leaks.served(rng, "benign")
    copies = [leaks.perturb(text, rng) for _ in range(12)]
    original = words(text)
    for copy in copies:
        mine = words(copy)
        assert 0.45 * len(original) < len(mine) < 0.7 * len(original)
        kept = sum(a == b for a, b in zip(original, mine, strict=False))
        assert kept < len(mine)  # some words replaced
    assert len({copy[:6] for copy in copies}) > 1  # more than one layout


def test_the_population_has_the_requested_size():
    accounts = leaks.population(500, 50_000)
    assert len(accounts) == 500
    assert abs(sum(a.responses for a in accounts) - 50_000) < 500
    assert min(a.responses for a in accounts if a.population != "benign") >= 400
