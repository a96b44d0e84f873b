"""Guardrails started in this process, by the audit file each writes.

Two started guardrails writing one file fork its hash chain (each links to the last record it
wrote itself, so ``guardrail audit verify`` fails), and each keeps limits of its own: the usual
cause is one app guarded twice (wrapped and ``add_middleware``), or guarded once per route.
Said once at the second one's startup, as a warning: an embedder may mean it.
"""

from __future__ import annotations

import logging
import os
from weakref import WeakValueDictionary

from guardrail.audit.sinks import FileSink, Sink

logger = logging.getLogger("guardrail")

_writers: WeakValueDictionary[str, object] = WeakValueDictionary()


def _trail(sink: Sink) -> str | None:
    return os.path.abspath(sink.path) if isinstance(sink, FileSink) else None


def claim(guard: object, sink: Sink) -> None:
    """Note that ``guard`` writes ``sink``; warn if another started guardrail writes it."""
    trail = _trail(sink)
    if trail is None:
        return
    writer = _writers.setdefault(trail, guard)
    if writer is not guard:
        logger.warning(
            "guardrail: two guardrails in this process write the audit trail %s: its hash "
            "chain forks (guardrail audit verify fails there) and each applies its own "
            "limits. Guard the app once (app = Guardrail(app, policy=...), or "
            "app.add_middleware(Guardrail, ...), not both, and not once per route), or give "
            "each its own trail.",
            trail,
        )


def release(guard: object, sink: Sink) -> None:
    trail = _trail(sink)
    if trail is not None and _writers.get(trail) is guard:
        del _writers[trail]
