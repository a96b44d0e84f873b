"""Where simulated clients come from: residential, datacenter and mobile-carrier /24s.

Addresses are drawn from first octets typical of each kind of network, so that a subnet
looks like what it stands for, and never from reserved, private or documentation ranges
(the example policy allow-lists 192.0.2.0/24, and 127.0.0.1 is the simulated proxy).
A subnet is returned as its first three octets (``"73.41.200"``); ``host`` adds the last.
"""

from __future__ import annotations

import random

# First octets, by the kind of network that mostly announces them. Illustrative, not a
# registry: what matters is that the kinds do not share /24s by construction.
_RESIDENTIAL = (24, 47, 67, 68, 69, 71, 73, 75, 76, 81, 82, 86, 90, 92, 98, 109, 151, 176, 187, 189)
_DATACENTER = (3, 13, 18, 34, 35, 44, 54, 64, 104, 138, 139, 143, 146, 157, 159, 164, 165, 167)
_CARRIER = (100, 166, 172, 174, 208)  # second octets below keep clear of 100.64/10 and 172.16/12
_CORPORATE = (12, 38, 63, 66, 199, 204, 205, 206, 209, 216)


def _subnet(rng: random.Random, firsts: tuple[int, ...], second: tuple[int, int]) -> str:
    return f"{rng.choice(firsts)}.{rng.randint(*second)}.{rng.randint(0, 255)}"


def residential_subnet(rng: random.Random) -> str:
    """A home broadband /24."""
    return _subnet(rng, _RESIDENTIAL, (0, 255))


def datacenter_subnet(rng: random.Random) -> str:
    """A cloud or hosting provider's /24."""
    return _subnet(rng, _DATACENTER, (0, 255))


def carrier_subnet(rng: random.Random) -> str:
    """A mobile carrier's egress /24 (public side of its carrier-grade NAT)."""
    return _subnet(rng, _CARRIER, (0, 15))


def corporate_subnet(rng: random.Random) -> str:
    """An office or university egress /24."""
    return _subnet(rng, _CORPORATE, (0, 255))


def host(rng: random.Random, subnet: str) -> str:
    """One address in ``subnet`` (never .0, .1 or .255)."""
    return f"{subnet}.{rng.randint(2, 254)}"


def distinct_subnets(rng: random.Random, count: int, kind: str) -> list[str]:
    """``count`` different /24s of one kind, in draw order (deterministic for ``rng``)."""
    draw = _KINDS[kind]
    seen: dict[str, None] = {}  # a dict, not a set: insertion order is part of the result
    while len(seen) < count:
        seen.setdefault(draw(rng), None)
    return list(seen)


def pool(rng: random.Random, subnets: list[str], size: int) -> list[str]:
    """``size`` distinct addresses spread over ``subnets`` (each subnet used at least once)."""
    size = min(max(size, len(subnets)), 253 * len(subnets))
    addresses: dict[str, None] = {}
    for subnet in subnets:
        addresses.setdefault(host(rng, subnet), None)
    while len(addresses) < size:
        addresses.setdefault(host(rng, rng.choice(subnets)), None)
    return list(addresses)


def residential_provider(rng: random.Random, subnets: int, size: int) -> list[str]:
    """A residential proxy provider's exit pool: ``size`` home addresses over ``subnets``
    different residential /24s (its customers' lines, rented out by the session)."""
    return pool(rng, distinct_subnets(rng, subnets, "residential"), size)


def subnet_of(ip: str) -> str:
    """The /24 of a dotted quad, as ``a.b.c`` (what these helpers call a subnet)."""
    return ip.rsplit(".", 1)[0]


_KINDS = {
    "residential": residential_subnet,
    "datacenter": datacenter_subnet,
    "carrier": carrier_subnet,
    "corporate": corporate_subnet,
}
