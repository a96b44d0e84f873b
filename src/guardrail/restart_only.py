"""What a policy reload cannot change: the keys built once, at startup, into objects that
outlive a policy (the storage and its connections, the audit trail and its chain, the stores
holding risk state, the secret every API key is hashed with).

A reloaded policy that changes one of them is refused whole, each key named with its file,
line and what it must stay; the policy in force is kept. Changing them means a restart.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel

from guardrail.backends.uri import mask_uri
from guardrail.errors import PolicyIssue
from guardrail.secrets import resolve_secret

if TYPE_CHECKING:
    from guardrail.policy import Policy

_Read = Callable[["Policy"], object]


def _plain(value: object) -> object:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


#: key path → (what it is built into, how to read it from a policy, how to show its value)
RESTART_ONLY: dict[tuple[str, ...], tuple[str, _Read, Callable[[object], object]]] = {
    ("storage",): ("the limits' storage", lambda p: p.storage, lambda v: mask_uri(str(v))),
    ("on_storage_error",): ("the storage's fallback", lambda p: p.on_storage_error, _plain),
    ("storage_breaker",): ("the storage's breaker", lambda p: p.storage_breaker, _plain),
    ("max_subjects",): ("the in-memory stores", lambda p: p.max_subjects, _plain),
    ("audit", "sink"): ("the audit writer", lambda p: p.audit.sink, lambda v: mask_uri(str(v))),
    ("audit", "rotate"): ("the audit writer", lambda p: p.audit.rotate, _plain),
    ("audit", "hash_chain"): ("the audit chain", lambda p: p.audit.hash_chain, _plain),
    ("audit", "chain_key"): ("the audit chain", lambda p: p.audit.chain_key, lambda v: "…"),
    ("audit", "aggregate"): ("the audit counts", lambda p: p.audit.aggregate, _plain),
    ("risk", "half_life"): ("the risk store", lambda p: p.risk.half_life, _plain),
    ("risk", "share_every"): ("the risk store", lambda p: p.risk.share_every, _plain),
    ("thresholds",): (
        "whether the risk engine runs (thresholds present or not)",
        lambda p: bool(p.thresholds),
        lambda v: "some" if v else "none",
    ),
    ("secret",): ("every API key's hash", lambda p: p.secret, lambda v: "…"),
    # the provenance index and its background task (routes, watermark and signatures reload)
    ("provenance", "enabled"): ("the provenance index", lambda p: p.provenance.enabled, _plain),
    ("provenance", "retention"): ("the provenance index", lambda p: p.provenance.retention, _plain),
    ("provenance", "max_entries"): (
        "the provenance index",
        lambda p: p.provenance.max_entries,
        _plain,
    ),
    ("provenance", "path"): ("the provenance index", lambda p: p.provenance.path, _plain),
    ("provenance", "save_every"): (
        "the provenance index",
        lambda p: p.provenance.save_every,
        _plain,
    ),
    ("provenance", "key"): ("the provenance sketches", lambda p: p.provenance.key, lambda v: "…"),
    ("metrics",): ("the metrics' registry and path", lambda p: p.metrics, _plain),
}


def unchangeable(old: Policy, new: Policy, secret: bytes) -> list[PolicyIssue]:
    """The issues that refuse ``new`` in place of ``old``; ``secret`` is the one in use."""
    issues = []
    for path, (built, read, shown) in RESTART_ONLY.items():
        was, now = read(old), read(new)
        if was != now:
            expected = (
                f"unchanged ({shown(was)}): {built} is built at startup; restart to change it"
            )
            line = new.line_of(path)
            issues.append(PolicyIssue(new.source, line, ".".join(path), shown(now), expected))
    # the same reference, another value: a file rewritten, an environment changed
    if (
        new.secret is not None
        and new.secret == old.secret
        and not hmac.compare_digest(resolve_secret(new.secret), secret)
    ):
        expected = "the value in use: every API key's hash is keyed by it; restart to change it"
        line = new.line_of(("secret",))
        issues.append(PolicyIssue(new.source, line, "secret", "…", expected))
    return issues
