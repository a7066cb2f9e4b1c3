"""The request path's caches give the same answers as computing afresh."""

from __future__ import annotations

import random
import zlib
from collections import Counter

from simiankube.contract import Behavior, Dependency, NanoserviceConfig, Target
from simiankube.nanoservice.client import Caller, Health, new_pool
from simiankube.nanoservice.metrics import Metrics
from simiankube.nanoservice.policy import Endpoint, distribute, ring_owner
from simiankube.nanoservice.resolver import Resolver
from simiankube.nanoservice.tracing import SpanExporter


def test_distribute_matches_the_uncached_tokens() -> None:
    ring = tuple(f"cass-{i}" for i in range(7))
    assert distribute(ring) == tuple(i * (0xFFFFFFFF // 7) for i in range(7))
    assert distribute(ring) is distribute(tuple(ring))  # cached per ring
    for key in ["", "a", "user-17", *map(str, range(200))]:
        h = zlib.crc32(key.encode())
        assert ring_owner(ring, key) == max((t, n) for t, n in zip(distribute(ring), ring) if t <= h)[1]


def test_endpoint_key_is_address_and_port() -> None:
    e = Endpoint("127.0.0.1", 8080, "zoneA")
    assert e.key == "127.0.0.1:8080" and e.key is e.key
    assert e == Endpoint("127.0.0.1", 8080, "zoneA")


def test_health_with_nothing_ejected_and_after_expiry() -> None:
    health = Health(base_seconds=0.0)
    assert not health.ejected() and not health.ejected(dead_only=True)
    health.failure("a:1", hard=True)  # ejected for 0 s: expires at once
    assert health.ejected() == set()
    slow = Health(base_seconds=60)
    slow.failure("b:1", hard=True)
    assert slow.ejected() == {"b:1"} and slow.ejected(dead_only=True) == {"b:1"}


def test_resolver_answers_stay_the_same_object_until_they_change() -> None:
    table = {"svc": (Endpoint("127.0.0.2", 8080, "zoneA", "svc-0"),)}
    resolver = Resolver(table)
    first = resolver.cached("svc", 8080)
    assert first is resolver.cached("svc", 8080) and first == table["svc"]
    assert resolver.cached("svc", 9090) == (Endpoint("127.0.0.2", 9090, "zoneA", "svc-0"),)
    dns = Resolver()
    assert dns.cached("x", 80) == ()
    dns._cache[("x", 80)] = (Endpoint("10.0.0.1", 80),)
    assert dns.cached("x", 80) is dns.cached("x", 80)


async def test_resolver_version_moves_only_when_an_answer_changes() -> None:
    answers = [(Endpoint("10.0.0.1", 80),), (Endpoint("10.0.0.1", 80),), None, (Endpoint("10.0.0.2", 80),), ()]

    class Scripted(Resolver):
        async def lookup(self, host: str, port: int) -> tuple[Endpoint, ...] | None:
            return answers.pop(0)

    dns = Scripted()
    first = await dns.resolve("x", 80)
    assert dns.version == 1
    assert await dns.resolve("x", 80) is first and dns.version == 1  # the same answer: nothing to rebuild
    assert await dns.resolve("x", 80) is first and dns.version == 1  # a failed lookup keeps the last answer
    assert await dns.resolve("x", 80) == (Endpoint("10.0.0.2", 80),) and dns.version == 2
    assert await dns.resolve("x", 80) == () and dns.version == 3  # nobody there is an answer too


def _router(resolver: Resolver, zone: str = "zoneA") -> tuple[Caller, tuple[Dependency, ...]]:
    """A caller with two dependencies: `a` has 4 instances (zoneA and zoneB alternating), `b` 2 in zoneB."""
    deps = tuple(Dependency(name, "store", (Target("r1", name, f"{name}-peers"),)) for name in ("a", "b"))
    config = NanoserviceConfig("arch", "router", "zuul", "r1", Behavior(), deps, traffic=None)
    caller = Caller(config=config, zone=zone, address="127.0.0.1", pool=new_pool(10.0), resolver=resolver,
                    metrics=Metrics("router", "zuul"), exporter=SpanExporter(), rng=random.Random(5))
    return caller, deps


def test_dependency_weights_are_cached_until_an_answer_or_an_ejection_changes_them() -> None:
    a = tuple(Endpoint(f"10.0.0.{i}", 8080, ("zoneA", "zoneB")[i % 2], f"a-{i}") for i in range(4))
    b = tuple(Endpoint(f"10.0.1.{i}", 8080, "zoneB", f"b-{i}") for i in range(2))
    resolver = Resolver()
    resolver._cache.update({("a-peers", 8080): a, ("b-peers", 8080): b})
    caller, deps = _router(resolver)

    def shares(prefer_zone: bool) -> dict[str, float]:
        drawn = Counter(caller.choose_dependency(list(deps), prefer_zone=prefer_zone).service
                        for _ in range(6000))  # a fresh list each time, as staash's tiers are
        return {service: round(n / 6000, 1) for service, n in drawn.items()}

    assert shares(False) == {"a": 0.7, "b": 0.3}  # 4 : 2 instances
    assert shares(True) == {"a": 1.0}  # zoneA: a's two instances there, none of b's
    assert len(caller._weights) == 2
    resolver._cache[("a-peers", 8080)] = a[1:2]  # a now has one instance, in zoneB
    resolver.version += 1
    assert shares(False) == {"a": 0.3, "b": 0.7}
    for endpoint in b:  # every b instance refused: ejected, so only a counts
        caller.health.failure(endpoint.key, hard=True)
    assert shares(False) == {"a": 1.0}
