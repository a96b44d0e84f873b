"""Output provenance: which subjects were served the texts of a suspect dataset.

``sketch`` turns a served text into 48 bytes, ``index`` keeps them by subject and time in
bounded memory (and on disk), ``attribute`` ranks the subjects whose served outputs a set of
suspect texts reproduces, and says when nobody is beyond chance. The middleware's side
(capturing the served text of JSON and SSE responses) calls ``ProvenanceIndex.add``.
"""

