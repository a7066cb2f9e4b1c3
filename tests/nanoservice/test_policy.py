"""The pure decisions: ring ownership, tier order, zone choice, regions, latency draws."""

from __future__ import annotations

import random
import statistics
from collections import Counter

import pytest

from simiankube.contract import Dependency, Latency, Target
from simiankube.nanoservice.client import Health
from simiankube.nanoservice.policy import (
    Endpoint,
    choose_endpoint,
    draw_latency_ms,
    region_targets,
    choose_weighted,
    instance_weights,
    ring_owner,
    tier_order,
    zone_rings,
)

def test_distribute_spaces_tokens_evenly_so_ownership_is_balanced() -> None:
    """spigo's Distribute: with crc32 tokens of names one of 12 nodes owned 41 % of keys and another 2 %."""
    ring = tuple(sorted(f"netflixoss-cassTurtle-us-east-1-{i}" for i in range(12)))
    owned = Counter(ring_owner(ring, f"key{i}") for i in range(24_000))
    assert set(owned) == set(ring)
    shares = [owned[n] / 24_000 for n in ring]
    assert max(shares) < 1 / 12 * 1.15 and min(shares) > 1 / 12 * 0.85, shares


def test_one_ring_per_zone_whatever_the_order_of_members() -> None:
    members = [(f"c-{i}", ("zoneA", "zoneB", "zoneC")[i % 3]) for i in range(9)]
    rings = zone_rings(members)
    assert rings == zone_rings(list(reversed(members)))
    assert rings["zoneA"] == ("c-0", "c-3", "c-6")
    assert ring_owner(rings["zoneA"], "k") in rings["zoneA"]
    assert zone_rings([]) == {}


def test_weights_count_instances_own_zone_first_with_fallback() -> None:
    a = [Endpoint(f"10.0.0.{i}", 8080, ("zoneA", "zoneB", "zoneC")[i % 3]) for i in range(6)]
    b = [Endpoint(f"10.0.1.{i}", 8080, "zoneB") for i in range(3)]
    assert instance_weights([a, b], own_zone="zoneA", prefer_zone=False, ejected=set()) == [6, 3]
    assert instance_weights([a, b], own_zone="zoneA", prefer_zone=True, ejected=set()) == [2, 0]
    assert instance_weights([a, b], own_zone="zoneC", prefer_zone=True, ejected={a[2].key, a[5].key}) == [4, 3]
    dead = {e.key for e in [*a, *b]}
    assert instance_weights([a, b], own_zone="zoneA", prefer_zone=False, ejected=dead) == [6, 3]


def test_choose_weighted_follows_the_weights() -> None:
    rng = random.Random(3)
    drawn = Counter(choose_weighted([18, 24, 0], rng) for _ in range(42_000))
    assert drawn[2] == 0
    assert abs(drawn[0] / 42_000 - 18 / 42) < 0.01
    assert choose_weighted([0, 0], rng) in (0, 1)


def dep(service: str, package: str, *regions: str) -> Dependency:
    return Dependency(service, package, tuple(Target(r, f"{service}-{r}", f"{service}-{r}-peers") for r in regions))


def test_tier_order_is_cache_volume_cassandra_store_staash_then_others() -> None:
    deps = [dep("s", "store"), dep("x", "karyon"), dep("c", "cache"), dep("p", "priamCassandra"), dep("v", "volume")]
    assert [d.package for d in tier_order(deps)] == ["cache", "volume", "priamCassandra", "store", "karyon"]


def test_other_regions_only_through_the_registry_and_everything_for_global_callers() -> None:
    d = dep("db", "store", "us-east-1", "us-west-2")
    assert [[t.region for t in g] for g in region_targets(d, "us-east-1", False)] == [["us-east-1"], []]
    assert [[t.region for t in g] for g in region_targets(d, "us-east-1", True)] == [["us-east-1"], ["us-west-2"]]
    assert [[t.region for t in g] for g in region_targets(d, "global", False)] == [["us-east-1", "us-west-2"], []]


ENDPOINTS = [Endpoint(f"127.0.0.{i}", 8080, zone) for i, zone in enumerate(["zoneA", "zoneB", "zoneC", "zoneA"])]


def pick(own: str, prefer: bool, ejected: set[str] = frozenset(), tried: set[str] = frozenset()) -> set[str]:  # type: ignore[assignment]
    rng = random.Random(1)
    chosen = {choose_endpoint(ENDPOINTS, own_zone=own, prefer_zone=prefer, ejected=ejected, exclude=tried, rng=rng)
              for _ in range(200)}
    return {e.zone if e else "none" for e in chosen}


def test_zone_preference_with_fallback_to_other_zones() -> None:
    assert pick("zoneA", True) == {"zoneA"}
    assert pick("zoneA", False) == {"zoneA", "zoneB", "zoneC"}
    assert pick("", True) == {"zoneA", "zoneB", "zoneC"}  # pods: zone unknown, all count as own
    own = {e.key for e in ENDPOINTS if e.zone == "zoneA"}
    assert pick("zoneA", True, ejected=own) == {"zoneB", "zoneC"}
    assert pick("zoneA", True, tried=own) == {"zoneB", "zoneC"}
    assert pick("zoneA", True, ejected={e.key for e in ENDPOINTS}) == {"none"}


def test_health_ejects_on_refusal_at_once_and_on_three_timeouts() -> None:
    health = Health(base_seconds=60)
    health.failure("a", hard=True)
    for _ in range(2):
        health.failure("b", hard=False)
    assert health.ejected() == {"a"}
    health.failure("b", hard=False)
    assert health.ejected() == {"a", "b"}
    health.until["a"] = 0  # the timer ran out: eligible again
    assert health.ejected() == {"b"}


@pytest.mark.parametrize("distribution", ["constant", "uniform", "normal", "exponential"])
def test_latency_draws_follow_the_distribution_and_are_clipped(distribution: str) -> None:
    latency = Latency(distribution, mean_ms=10.0, stddev_ms=3.0, max_ms=1000.0)
    rng = random.Random(1)
    draws = [draw_latency_ms(latency, rng) for _ in range(4000)]
    assert statistics.mean(draws) == pytest.approx(10.0, rel=0.08)
    clipped = Latency(distribution, mean_ms=10.0, stddev_ms=3.0, max_ms=11.0)
    assert all(0.0 <= draw_latency_ms(clipped, rng) <= 11.0 for _ in range(1000))
    if distribution == "constant":
        assert set(draws) == {10.0}
    again = random.Random(1)
    assert draws == [draw_latency_ms(latency, again) for _ in range(4000)]  # seeded: repeatable


def test_unknown_distribution_is_an_error() -> None:
    with pytest.raises(ValueError):
        draw_latency_ms(Latency("pareto"), random.Random(1))
