"""Rank the subjects whose served outputs a set of suspect texts reproduces.

A suspect text *matches* an index entry when their sketches agree on at least ``min_bins``
of the 48 bins (8 by default), not counting the bins where the suspect holds a *common*
value (one the index's entries hold twice as often as chance: the bin's smallest shingle is
boilerplate, a template's scaffold or a stock phrase, and agreeing on it says nothing about
who was served the text). A subject's evidence is the number of distinct suspect texts that
match one of its entries, with the similarity of each text's best match and the times of the
matched entries. A subject is *named* only when at least ``min_texts`` texts match it (9 by
default); otherwise the suspects attribute to nobody.

Why these numbers (measured with ``benchmarks/provenance.py`` on the simulator's outputs,
10,000 subjects and 1M entries, where campaign accounts share answer scaffolds and every
answer shares the model's stock phrasing): without the common values left out, 200
never-served texts matched some campaign account 17 to 30 times at 10 bins (at 50k entries),
as often as a leaked account's siblings did: boilerplate, not chance bytes, made the null.
With them left out, at 8 bins, over 1M entries, the subject that 200 never-served texts
matched most was matched by 1 to 6 of them (400 samples: 1: 20, 2: 167, 3: 152, 4: 48,
5: 11, 6: 2; each step up 4-5x rarer, so 9 or more is expected in well under 1 in 1,000),
while a leak of 200 outputs of one account matched it 87 to 150 times and its next subject
at most 4 times. The version-2 sketch (numpy; other hash functions, same estimator) left
the rule as it was, on its own null: 225 samples at 1M entries, the top subject matched by
1: 25, 2: 104, 3: 76, 4: 18, 5: 2 (each step past 3 4-9x rarer; 9 is far in the tail),
a leaked account 89 times or more (median 108), its next subject at most 3. Chance grows
with the index and the number of suspects (more pairs), so ``min_texts`` is a calibration
of this corpus at this size: re-run the benchmark's null on an index of another size, and
raise ``min_texts`` above its largest count with room.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from guardrail.provenance.index import ProvenanceIndex
from guardrail.provenance.scan import common_values, scan
from guardrail.provenance.sketch import jaccard, matches

MIN_BINS = 8
MIN_TEXTS = 9


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
    sketches = [s for s in index.sketcher.sketch_many(texts) if s is not None]
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
    common = common_values(index.live_columns(list(cols)))
    evidence: dict[str, SubjectEvidence] = {}
    for number, slot in scan(cols, sketches, min_bins, common):
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
