"""Output provenance: which subjects were served the texts of a suspect dataset.

``sketch`` turns a served text into 48 bytes, ``index`` keeps them by subject and time in
bounded memory (and on disk), ``scan`` finds the entries a suspect agrees with, ``attribute``
ranks the subjects and says when nobody is beyond chance. The middleware's side (capturing
the served text of JSON and SSE responses, off the request path) calls
``ProvenanceIndex.add(subject, text, ts)``.
"""

from __future__ import annotations

from guardrail.provenance.attribute import Attribution, SubjectEvidence, attribute
from guardrail.provenance.index import ProvenanceIndex
from guardrail.provenance.sketch import Sketcher

__all__ = ["Attribution", "ProvenanceIndex", "Sketcher", "SubjectEvidence", "attribute"]
