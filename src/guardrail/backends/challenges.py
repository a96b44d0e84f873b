"""Where issued challenges and clearance uses live: in the configured backend, so that any
worker or host can verify a challenge another one issued, and a clearance's ``max_requests``
holds across all of them.

A challenge is kept under the principal it was issued to (its ``owner``), one live challenge
per owner: a challenged client asking again is shown the same one, so its requests cannot
fill the store or push out other clients' challenges. ``peek`` reads it without spending it,
so an answer is checked against the sender's own challenge before anything is spent or
counted; ``take`` hands it to the first caller and to no other (Redis GETDEL). A clearance's
uses are a counter that expires with the clearance.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol


class ChallengeStore(Protocol):
    async def put(self, owner: str, record: bytes, expires_at: float, now: float) -> bytes | None:
        """Keep ``record`` as ``owner``'s challenge until ``expires_at``, unless it has a live
        one; returns the live record (``record`` when kept; None in the rare race where the
        live one went between the two)."""
        ...

    async def peek(self, owner: str, now: float) -> bytes | None:
        """``owner``'s challenge, left in place; None when absent or expired."""
        ...

    async def take(self, owner: str, now: float) -> bytes | None:
        """``owner``'s challenge, removed: the first caller gets it, later ones (and after
        expiry) None."""
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

    async def put(self, owner: str, record: bytes, expires_at: float, now: float) -> bytes | None:
        live = await self.peek(owner, now)
        if live is not None:
            return live
        self._challenges[owner] = (record, expires_at)
        self._challenges.move_to_end(owner)
        if len(self._challenges) > self.max_entries:
            self._challenges.popitem(last=False)
        return record

    async def peek(self, owner: str, now: float) -> bytes | None:
        entry = self._challenges.get(owner)
        if entry is None or now >= entry[1]:
            return None
        return entry[0]

    async def take(self, owner: str, now: float) -> bytes | None:
        entry = self._challenges.pop(owner, None)
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
