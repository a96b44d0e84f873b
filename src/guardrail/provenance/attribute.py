"""Rank the subjects whose served outputs a set of suspect texts reproduces.

A suspect text *matches* an index entry when their sketches agree on at least
``min_bins`` of the 48 bins (10 by default: an estimated Jaccard of about 0.2 over word
trigrams). A subject's evidence is the number of distinct suspect texts that match one of its
entries, with the similarity of each text's best match and the times of the matched
entries. A subject is *named* only when at least ``min_texts`` texts match it (5 by
default); otherwise the suspects attribute to nobody.

Why these two numbers (measured with ``benchmarks/provenance.py`` on the simulator's
outputs, where campaign accounts share answer scaffolds): a leaked output, cut to 60%, with a
fifth of its words replaced and reformatted, agrees with its source on 11.7 bins on average
and on 10 or more 72% of the time. Two different outputs agree on 0.4 to 0.7 bins on
average (a byte agrees by chance 1 time in 256, the rest is shared boilerplate); 10 bins or
more happened for fewer than 1 pair in 100,000 among siblings of one campaign, the hardest
pairs there are. Over 200 suspects and 1M entries chance still yields some matching pairs,
but they scatter over subjects: a subject collects a handful of chance texts only if it has
thousands of entries sharing the suspects' template, while the leaked account collects
about 140 of 200. ``min_texts`` sits above the largest chance count seen over the benchmark's
never-served samples; see its output for the measured distribution.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from guardrail.provenance.index import ProvenanceIndex
from guardrail.provenance.scan import scan
from guardrail.provenance.sketch import jaccard, matches

MIN_BINS = 10
MIN_TEXTS = 5


@dataclass(slots=True)
class SubjectEvidence:
    """What ties one subject to the suspect texts."""

    subject: str
    entries: int  # the subject's live entries in the index
    best: dict[int, float] = field(default_factory=dict)  # suspect number -> best similarity
    first: float = float("inf")
    last: float = float("-inf")

    @property
    def texts(self) -> int:
        return len(self.best)

    @property
    def mean_similarity(self) -> float:
        return sum(self.best.values()) / len(self.best) if self.best else 0.0

    @property
    def max_similarity(self) -> float:
        return max(self.best.values(), default=0.0)

    def as_dict(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "texts_matched": self.texts,
            "entries": self.entries,
            "mean_similarity": round(self.mean_similarity, 3),
            "max_similarity": round(self.max_similarity, 3),
            "first_seen": self.first,
            "last_seen": self.last,
        }


@dataclass(frozen=True, slots=True)
class Attribution:
    """Subjects ranked by matched texts (then mean similarity); ``named`` those beyond
    chance, ``[]`` when the suspects attribute to nobody."""

    suspects: int
    sketched: int  # suspects long enough to sketch
    ranked: tuple[SubjectEvidence, ...]
    named: tuple[SubjectEvidence, ...]
    min_bins: int
    min_texts: int

    def as_dict(self, top: int | None = None) -> dict[str, object]:
        return {
            "suspects": self.suspects,
            "sketched": self.sketched,
            "rule": {"min_bins": self.min_bins, "min_texts": self.min_texts},
            "named": [e.subject for e in self.named],
            "ranked": [e.as_dict() for e in self.ranked[:top]],
        }


def attribute(
    index: ProvenanceIndex,
    suspects: Iterable[str],
    *,
    min_bins: int = MIN_BINS,
    min_texts: int = MIN_TEXTS,
    columns: Sequence[bytes] | None = None,
) -> Attribution:
    """``columns``: ``index.columns()``, when trying several suspect sets on one index."""
    texts = list(suspects)
    sketches = [s for s in map(index.sketcher.sketch, texts) if s is not None]
    return attribute_sketches(
        index, sketches, len(texts), min_bins=min_bins, min_texts=min_texts, columns=columns
    )


def attribute_sketches(
    index: ProvenanceIndex,
    sketches: Sequence[bytes],
    suspects: int,
    *,
    min_bins: int = MIN_BINS,
    min_texts: int = MIN_TEXTS,
    columns: Sequence[bytes] | None = None,
) -> Attribution:
    cols = columns if columns is not None else index.columns()
    evidence: dict[str, SubjectEvidence] = {}
    for number, slot in scan(cols, sketches, min_bins):
        if not index.live(slot):
            continue
        subject, ts, stored = index.entry(slot)
        found = evidence.get(subject)
        if found is None:
            found = evidence[subject] = SubjectEvidence(subject, 0)
        similarity = jaccard(matches(sketches[number], stored))
        if similarity > found.best.get(number, -1.0):
            found.best[number] = similarity
        found.first = min(found.first, ts)
        found.last = max(found.last, ts)
    if evidence:
        counts = index.subjects_entries()
        for subject, found in evidence.items():
            found.entries = counts.get(subject, 0)
    ranked = tuple(sorted(evidence.values(), key=lambda e: (-e.texts, -e.mean_similarity)))
    named = tuple(e for e in ranked if e.texts >= min_texts)
    return Attribution(suspects, len(sketches), ranked, named, min_bins, min_texts)
