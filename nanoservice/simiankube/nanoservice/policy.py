"""Pure decisions of a nanoservice: rings, tiers, zones, regions, latency draws.

Nothing here does I/O, so every rule a package follows is unit-tested on its
own and the packages stay thin.
"""

from __future__ import annotations

import bisect
import random
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache

from simiankube import contract
from simiankube.contract import Dependency, Latency, Target

# staash reads through its tiers in this order; a miss falls through to the next.
TIER_ORDER = ("cache", "volume", "priamCassandra", "store", "staash")
TOKEN_SPACE = 0xFFFFFFFF  # crc32's range: ring tokens split it evenly


@dataclass(frozen=True)
class Endpoint:
    """One reachable address of an instance, as the resolver found it."""

    address: str
    port: int
    zone: str = ""  # "" = unknown (Kubernetes pods): every endpoint counts as own zone
    instance: str = ""  # stable instance name when known, else the address
    region: str = ""

    @cached_property
    def key(self) -> str:  # computed once: every choice of an endpoint reads it (cached_property bypasses frozen)
        return f"{self.address}:{self.port}"


def key_hash(text: str) -> int:
    """spigo's ring hash: crc32 of the key."""
    return zlib.crc32(text.encode())


def zone_rings(members: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    """One ring per zone, members sorted by name: spigo's asgard distributes a ring's tokens zone by zone, so
    every zone holds a full copy and reads are served within the zone."""
    rings: dict[str, list[str]] = {}
    for name, zone in members:
        rings.setdefault(zone, []).append(name)
    return {zone: tuple(sorted(names)) for zone, names in sorted(rings.items())}


@lru_cache(maxsize=256)
def distribute(ring: tuple[str, ...]) -> tuple[int, ...]:
    """spigo's Distribute: evenly spaced tokens, member i of n owning [i, i+1) x (0xFFFFFFFF // n) of the hash
    space, so every member owns the same share of keys."""
    step = TOKEN_SPACE // len(ring) if ring else 0
    return tuple(i * step for i in range(len(ring)))


def ring_owner(ring: tuple[str, ...], key: str) -> str:
    """The member whose token is the last at or below crc32(key) (spigo's ByToken.Find)."""
    tokens = distribute(ring)
    return ring[max(bisect.bisect_right(tokens, key_hash(key)) - 1, 0)]


def tier_order(dependencies: Iterable[Dependency]) -> list[Dependency]:
    """staash's read order by package; dependencies of other packages come last, in config order."""
    def rank(dep: Dependency) -> int:
        return TIER_ORDER.index(dep.package) if dep.package in TIER_ORDER else len(TIER_ORDER)

    return sorted(dependencies, key=rank)


def region_targets(dep: Dependency, own_region: str, registry: bool) -> tuple[list[Target], list[Target]]:
    """(preferred, fallback) targets of a dependency for a caller in `own_region`.

    A caller uses its own region; a global caller (or one whose dependency has
    no placement in its region) uses every region. Other regions are a
    fallback only when the caller is connected through the registry (eureka),
    which is what gives it cross-region visibility.
    """
    own = [t for t in dep.targets if t.region == own_region]
    if not own:
        return list(dep.targets), []
    others = [t for t in dep.targets if t.region != own_region] if registry else []
    return own, others


def same_zone(own_zone: str, zone: str) -> bool:
    """Unknown or cross-zone on either side counts as the same zone."""
    unknown = ("", contract.ANY_ZONE)
    return own_zone in unknown or zone in unknown or own_zone == zone


def choose_endpoint(
    endpoints: Sequence[Endpoint],
    *,
    own_zone: str,
    prefer_zone: bool,
    ejected: frozenset[str] | set[str],
    exclude: frozenset[str] | set[str],
    rng: random.Random,
) -> Endpoint | None:
    """Uniform random choice (spigo's balancing) over healthy, not yet tried endpoints.

    With `prefer_zone`, own-zone endpoints win and other zones are the
    fallback when the own zone has no healthy one (spigo never fell back).
    When every endpoint is ejected, None: failing fast beats hammering a dead
    service.
    """
    healthy = [e for e in endpoints if e.key not in ejected and e.key not in exclude]
    if prefer_zone:
        local = [e for e in healthy if same_zone(own_zone, e.zone)]
        healthy = local or healthy
    return rng.choice(healthy) if healthy else None


def instance_weights(
    candidates: Sequence[Sequence[Endpoint]], *, own_zone: str, prefer_zone: bool, ejected: frozenset[str] | set[str]
) -> list[int]:
    """How many instances each dependency offers a router, so that choosing a dependency by these weights and
    then an instance of it uniformly is spigo's `router.Random()` over the instances of all dependencies.

    Healthy instances count (own zone only with `prefer_zone`, unless no dependency has one there — the
    zone fallback); when none is healthy every known instance counts, so the call still fails fast.
    """
    healthy = [[e for e in group if e.key not in ejected] for group in candidates]
    if prefer_zone:
        local = [sum(1 for e in group if same_zone(own_zone, e.zone)) for group in healthy]
        if any(local):
            return local
    weights = [len(group) for group in healthy]
    return weights if any(weights) else [len(group) for group in candidates]


def choose_weighted(weights: Sequence[int], rng: random.Random) -> int:
    """An index drawn with probability proportional to its weight (uniform when every weight is 0)."""
    total = sum(weights)
    if total <= 0:
        return rng.randrange(len(weights))
    draw = rng.randrange(total)
    for index, weight in enumerate(weights):
        draw -= weight
        if draw < 0:
            return index
    raise AssertionError("unreachable: the draw is below the total")


def draw_latency_ms(latency: Latency, rng: random.Random) -> float:
    """One service time from the configured distribution, clipped to [0, max_ms]."""
    mean = latency.mean_ms
    match latency.distribution:
        case "constant":
            value = mean
        case "uniform":
            value = rng.uniform(0.0, 2.0 * mean)
        case "normal":
            value = rng.gauss(mean, latency.stddev_ms)
        case "exponential":
            value = rng.expovariate(1.0 / mean) if mean > 0 else 0.0
        case other:
            raise ValueError(f"unknown latency distribution {other!r}")
    return min(max(value, 0.0), latency.max_ms)
