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
    """spigo's ring hash: crc32 of the key (or of an instance name for its token)."""
    return zlib.crc32(text.encode())


def ring_order(names: Sequence[str], key: str) -> list[str]:
    """Instances in ring order starting at the owner of `key`.

    Tokens are crc32 of the stable instance names, so every instance computes
    the same ring from the same configuration; the owner is the first token at
    or after the key's hash, wrapping around.
    """
    if not names:
        return []
    ring, tokens = _ring(tuple(names))
    start = bisect.bisect_left(tokens, key_hash(key)) % len(ring)
    return [*ring[start:], *ring[:start]]


@lru_cache(maxsize=256)
def _ring(names: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(names in token order, their tokens): the same for every key, so computed once per ring."""
    ring = sorted((key_hash(n), n) for n in names)
    return tuple(n for _, n in ring), tuple(t for t, _ in ring)


def replica_per_zone(ordered: Sequence[str], zones: dict[str, str], owner: str) -> list[str]:
    """After the owner, the first instance in ring order in each other zone."""
    seen = {zones.get(owner, "")}
    replicas = []
    for name in ordered:
        zone = zones.get(name, "")
        if name != owner and zone not in seen:
            seen.add(zone)
            replicas.append(name)
    return replicas


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
