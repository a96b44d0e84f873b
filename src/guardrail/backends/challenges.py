"""Where issued challenges and clearance uses live: in the configured backend, so that any
worker or host can verify a challenge another one issued, and a clearance's ``max_requests``
holds across all of them.

A challenge is single-use: ``take`` hands its record to the first caller and to no other
(Redis GETDEL). ``peek`` reads it without spending it, so that an answer is checked against
the principal the challenge was issued to before anything is spent or counted. A
clearance's uses are a counter that expires with the clearance.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol


class ChallengeStore(Protocol):
    async def put(self, challenge_id: str, record: bytes, expires_at: float, now: float) -> None:
        """Keep ``record`` for ``challenge_id`` until ``expires_at``."""
        ...

    async def peek(self, challenge_id: str, now: float) -> bytes | None:
        """The record, left in place; None when absent or expired."""
        ...

    async def take(self, challenge_id: str, now: float) -> bytes | None:
        """The record, removed: the first caller gets it, later ones (and after expiry) None."""
        ...

    async def use(self, clearance_id: str, expires_at: float, now: float) -> int:
        """Count one use of a clearance; returns its uses so far, this one included."""
        ...

    async def grant(self, name: str, expires_at: float, now: float) -> None:
        """A server-side clearance for ``name`` (an API key or account that passed a challenge)
        until ``expires_at``; its uses (``use(name, ...)``) start again from 0."""
        ...

    async def granted(self, name: str, now: float) -> float | None:
        """The expiry of ``name``'s server-side clearance, if it has one."""
        ...


class MemoryChallengeStore:
    """In process, at most ``max_entries`` of each kind, the oldest dropped first."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._challenges: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._uses: OrderedDict[str, int] = OrderedDict()  # bounded, not expired: a grant resets
        self._grants: OrderedDict[str, float] = OrderedDict()

    async def put(self, challenge_id: str, record: bytes, expires_at: float, now: float) -> None:
        self._challenges[challenge_id] = (record, expires_at)
        if len(self._challenges) > self.max_entries:
            self._challenges.popitem(last=False)

    async def peek(self, challenge_id: str, now: float) -> bytes | None:
        entry = self._challenges.get(challenge_id)
        if entry is None or now >= entry[1]:
            return None
        return entry[0]

    async def take(self, challenge_id: str, now: float) -> bytes | None:
        entry = self._challenges.pop(challenge_id, None)
        if entry is None or now >= entry[1]:
            return None
        return entry[0]

    async def use(self, clearance_id: str, expires_at: float, now: float) -> int:
        count = self._uses[clearance_id] = self._uses.get(clearance_id, 0) + 1
        self._uses.move_to_end(clearance_id)
        while len(self._uses) > self.max_entries:
            self._uses.popitem(last=False)
        return count

    async def grant(self, name: str, expires_at: float, now: float) -> None:
        self._uses.pop(name, None)
        self._grants[name] = expires_at
        self._grants.move_to_end(name)
        while len(self._grants) > self.max_entries:
            self._grants.popitem(last=False)

    async def granted(self, name: str, now: float) -> float | None:
        expires_at = self._grants.get(name)
        return expires_at if expires_at is not None and now < expires_at else None
