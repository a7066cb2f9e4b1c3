"""The pure decisions: ring ownership, tier order, zone choice, regions, latency draws."""

from __future__ import annotations

import random
import statistics
import zlib

import pytest

from simiankube.contract import Dependency, Latency, Target
from simiankube.nanoservice.client import Health
from simiankube.nanoservice.policy import (
    Endpoint,
    choose_endpoint,
    draw_latency_ms,
    region_targets,
    replica_per_zone,
    ring_order,
    tier_order,
)

NAMES = [f"cass-{i}" for i in range(6)]


def test_ring_owner_is_the_first_token_at_or_after_the_key_hash() -> None:
    tokens = sorted((zlib.crc32(n.encode()), n) for n in NAMES)
    for key in ("a", "user42", "zzz", "key999"):
        h = zlib.crc32(key.encode())
        expected = next((n for t, n in tokens if t >= h), tokens[0][1])
        order = ring_order(NAMES, key)
        assert order[0] == expected
        assert sorted(order) == sorted(NAMES)


def test_ring_is_the_same_whatever_the_order_of_peers() -> None:
    assert ring_order(NAMES, "k") == ring_order(list(reversed(NAMES)), "k")
    assert ring_order([], "k") == []


def test_replicas_are_the_next_ring_node_in_each_other_zone() -> None:
    zones = {n: "zoneABC"[4 + i % 3] for i, n in enumerate(NAMES)}
    order = ring_order(NAMES, "k")
    replicas = replica_per_zone(order, zones, order[0])
    assert len(replicas) == 2
    assert len({zones[n] for n in [order[0], *replicas]}) == 3
    assert all(order.index(r) == min(order.index(n) for n in NAMES if zones[n] == zones[r]) for r in replicas)


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
