"""Token budgets, in two phases: reserved at admission, settled from the response.

At admission a request reserves its prompt's estimate plus the output it may ask for
(``max_tokens`` times the choices, or the route's ``default_max_tokens``) against every
``cost: tokens`` bucket, in the same all-or-nothing storage call as its request limits: that
reservation is what keeps concurrent requests from spending one budget twice. After the
response, the reservation is settled to what was used: the ``usage`` the server reports, else
the prompt's estimate plus the output counted in the stream. What was not used is given back,
whether the response ended, the client left or the app failed. A stream that outgrows its
reservation reserves more as it goes (``extend``), and is ended when the budget has no more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from guardrail.backends.base import BucketCharge, Storage
from guardrail.errors import StorageError
from guardrail.metering import Ask

logger = logging.getLogger("guardrail")

#: Tokens a stream reserves at a time once past its reservation: one storage call per this
#: many tokens, not one per event.
EXTEND_TOKENS = 256


def reservation(ask: Ask | None, default_max_tokens: int) -> tuple[int, int]:
    """(tokens to reserve, of which the prompt's estimate). A body guardrail could not read
    reserves the default output alone: its response's usage settles it."""
    if ask is None:
        return default_max_tokens, 0
    output = ask.output if ask.output is not None else default_max_tokens
    return ask.prompt + output * ask.choices, ask.prompt


@dataclass(slots=True)
class Budget:
    """One admitted request's hold on its token buckets."""

    storage: Storage  # the one that admitted it (the local fallback, when degraded)
    charges: list[BucketCharge]  # one per token bucket; ``cost`` is not read
    charged: int  # tokens held: the reservation, and what the stream has added since
    prompt: int  # the prompt's estimate, part of ``charged``
    on_error: Callable[[StorageError], bool]  # warns; True: carry on (fail_open)
    settled: bool = False

    async def extend(self, tokens: int, now: float) -> bool:
        """Reserve ``tokens`` more, if every bucket has them."""
        try:
            outcome = await self.storage.charge(self._moves(tokens), now)
        except StorageError as exc:
            return self.on_error(exc)
        if outcome.allowed:
            self.charged += tokens
        return outcome.allowed

    async def settle(self, used: int, now: float) -> None:
        """Make the buckets hold ``used`` tokens for this request instead of ``charged``."""
        if self.settled:
            return
        self.settled = True
        if used != self.charged:
            try:
                await self.storage.settle(self._moves(used - self.charged), now)
            except StorageError as exc:
                self.on_error(exc)  # the reservation stands as the charge
                return
            self.charged = used

    def _moves(self, tokens: int) -> list[BucketCharge]:
        return [c._replace(cost=tokens) for c in self.charges]
