"""Redis Cluster: a request whose buckets live in several hash slots.

A script call can only touch keys of one slot. Each subject's buckets share a slot (the
subject is the key's hash tag), so a request spans slots only when it charges several
subjects, e.g. ``api_key`` and ``subnet`` limits. Then one gcra.lua call per slot runs
concurrently; if any refuses (or fails), the calls that admitted are undone with
gcra_settle.lua. This is the one path that is not atomic: between the charge and the
refund, another request may see those buckets fuller than they end up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from redis.crc import key_slot

from guardrail.backends import lua
from guardrail.backends.base import BucketCharge, BucketState, Outcome, refused_state

log = logging.getLogger("guardrail.backends")


async def charge(
    client: lua.Client, prefix: str, charges: Sequence[BucketCharge], now: float
) -> Outcome:
    slots: dict[int, list[int]] = {}
    for index, c in enumerate(charges):
        slot = key_slot(lua.bucket_key(prefix, c.subject, c.name).encode())
        slots.setdefault(slot, []).append(index)
    if len(slots) == 1:
        allowed, states = await lua.charge(client, prefix, charges, now)
        return Outcome(allowed, tuple(states))

    groups = [[charges[i] for i in indexes] for indexes in slots.values()]
    replies = await asyncio.gather(
        *(lua.charge(client, prefix, group, now) for group in groups), return_exceptions=True
    )
    failure = next((r for r in replies if isinstance(r, BaseException)), None)
    refused = failure is not None or any(not r[0] for r in replies if isinstance(r, tuple))
    by_index: dict[int, BucketState] = {}
    to_refund: list[BucketCharge] = []
    for indexes, group, reply in zip(slots.values(), groups, replies, strict=True):
        if isinstance(reply, BaseException):
            continue
        group_allowed, states = reply
        if refused and group_allowed:
            to_refund += group
            states = [as_refused(c, s) for c, s in zip(group, states, strict=True)]
        by_index.update(zip(indexes, states, strict=True))
    if to_refund:
        await refund(client, prefix, to_refund, now)
    if failure is not None:
        raise failure
    return Outcome(not refused, tuple(by_index[i] for i in range(len(charges))))


async def refund(
    client: lua.Client, prefix: str, charges: Sequence[BucketCharge], now: float
) -> None:
    given_back = [c._replace(cost=-c.cost) for c in charges if c.cost]
    try:
        await settle(client, prefix, given_back, now)
    except Exception as exc:
        # The request is refused either way; the buckets stay overcharged until they drain.
        log.warning("cluster refund failed (%s: %s)", type(exc).__name__, exc)


async def settle(
    client: lua.Client, prefix: str, charges: Sequence[BucketCharge], now: float
) -> None:
    """gcra_settle.lua once per slot, concurrently; every slot is tried, the first failure
    is raised after."""
    slots: dict[int, list[BucketCharge]] = {}
    for c in charges:
        slot = key_slot(lua.bucket_key(prefix, c.subject, c.name).encode())
        slots.setdefault(slot, []).append(c)
    results = await asyncio.gather(
        *(lua.settle(client, prefix, group, now) for group in slots.values()),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result


def as_refused(c: BucketCharge, state: BucketState) -> BucketState:
    """What a bucket reports when its own slot admitted but the request was refused."""
    new_after = state.reset_after
    tat_after = max(new_after - c.cost * c.interval, 0.0)
    return refused_state(tat_after, new_after, c.interval, c.burst * c.interval)
