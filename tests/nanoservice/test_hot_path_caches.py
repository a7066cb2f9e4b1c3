"""The request path's caches give the same answers as computing afresh."""

from __future__ import annotations

import zlib

from simiankube.nanoservice.client import Health
from simiankube.nanoservice.policy import Endpoint, distribute, ring_owner
from simiankube.nanoservice.resolver import Resolver


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
