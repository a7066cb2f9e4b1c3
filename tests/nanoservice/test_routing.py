"""spigo's routing: one dependency instance per request, chosen over the instances of all dependencies
(handlers.GetRequest/Put with router.Random()), measured on real processes."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from simiankube.nanoservice.packages import SEEDED_KEY
from simiankube.nanoservice.traffic import KeyMix
from simiankube.testing.wait import wait_for

from tests.nanoservice.conftest import Mesh

REQUESTS = 600


def _served(mesh: Mesh, *services: str) -> list[float]:
    return [sum(mesh.metric(n, "server_requests_total") for n in mesh.service(s)) for s in services]


@pytest.mark.parametrize("package", ["monolith", "karyon", "elb", "zuul"])
def test_routers_split_requests_by_dependency_instances(mesh: Mesh, package: str) -> None:
    """lamp's webserver → memcache (1 instance) : rds-mysql (2) is 1:2 in spigo; it was 1:1 (every
    dependency) for monolith/karyon and 1:1 (one service at random) for elb/zuul."""
    mesh.load([
        {"name": "memcache", "package": "cache", "count": 3},  # one instance per zone
        {"name": "mysql", "package": "store", "count": 6},  # two per zone
        {"name": "web", "package": package, "count": 0 if package == "elb" else 1,
         "dependencies": ["memcache", "mysql"]},
    ])
    mesh.start_all()
    [web] = mesh.service("web")
    for _ in range(REQUESTS):
        assert mesh.call(web, "GET", "/kv/x")[0] == 404

    cache, store = _served(mesh, "memcache", "mysql")

    assert cache + store == REQUESTS  # one call per request
    assert abs(cache / REQUESTS - 1 / 3) < 0.06, (cache, store)


def test_fanout_all_calls_every_dependency(mesh: Mesh) -> None:
    mesh.load([
        {"name": "memcache", "package": "cache", "count": 1},
        {"name": "mysql", "package": "store", "count": 2},
        {"name": "web", "package": "monolith", "count": 1, "dependencies": ["memcache", "mysql"],
         "behavior": {"latency": {"distribution": "constant", "meanMs": 0}, "fanout": "all"}},
    ])
    mesh.start_all()
    for _ in range(50):
        assert mesh.call(mesh.service("web")[0], "GET", "/kv/x")[0] == 404
    assert _served(mesh, "memcache", "mysql") == [50, 50]


def test_denominator_mix_is_spigos_thirds_by_default() -> None:
    mix, rng = KeyMix(100 / 3), random.Random(5)
    drawn = [mix.next(rng) for _ in range(30_000)]
    kinds = Counter("put" if m == "PUT" else "seeded" if k == SEEDED_KEY else "earlier" for m, k in drawn)
    for kind in ("put", "seeded", "earlier"):
        assert abs(kinds[kind] / 30_000 - 1 / 3) < 0.015, kinds
    puts = [k for m, k in drawn if m == "PUT"]
    assert len(set(puts)) == len(puts)  # every put is a new key
    written = {int(k[3:]) for k in puts}
    assert all(int(k[3:]) < len(written) for m, k in drawn if m == "GET" and k != SEEDED_KEY)


def test_put_percent_moves_the_split_and_gets_stay_half_seeded() -> None:
    mix, rng = KeyMix(10.0), random.Random(6)
    drawn = [mix.next(rng) for _ in range(20_000)]
    puts = sum(1 for m, _ in drawn if m == "PUT")
    seeded = sum(1 for m, k in drawn if k == SEEDED_KEY)
    assert abs(puts / 20_000 - 0.10) < 0.01 and abs(seeded / 20_000 - 0.45) < 0.015


def test_stores_start_with_the_seeded_key(mesh: Mesh) -> None:
    mesh.load([{"name": "db", "package": "store", "count": 1}, {"name": "ring", "package": "riak", "count": 3}])
    mesh.start_all()
    for node in [*mesh.service("db"), *mesh.service("ring")]:
        assert mesh.call(node, "GET", f"/kv/{SEEDED_KEY}")[1]["value"] == "because..."


def test_hit_rate_turns_that_share_of_stored_gets_into_misses(mesh: Mesh) -> None:
    fast = {"distribution": "constant", "meanMs": 0}
    mesh.load([
        {"name": "never", "package": "cache", "count": 1, "behavior": {"latency": fast, "hitRate": 0}},
        {"name": "half", "package": "store", "count": 1, "behavior": {"latency": fast, "hitRate": 0.5}},
    ])
    mesh.start_all()
    [never], [half] = mesh.service("never"), mesh.service("half")
    assert {mesh.call(never, "GET", f"/kv/{SEEDED_KEY}")[0] for _ in range(20)} == {404}
    hits = sum(mesh.call(half, "GET", f"/kv/{SEEDED_KEY}")[0] == 200 for _ in range(400))
    assert 150 < hits < 250
    assert mesh.call(half, "GET", "/kv/absent")[0] == 404


def test_the_denominator_spreads_user_requests_over_dependency_instances(mesh: Mesh) -> None:
    mesh.load(
        [
            {"name": "small", "package": "store", "count": 1},
            {"name": "large", "package": "store", "count": 3},
            {"name": "users", "package": "denominator", "count": 0, "regions": 0,
             "dependencies": ["small", "large"]},
        ],
        traffic={"intervalMs": 2},
    )
    mesh.start_all()
    wait_for(lambda: sum(_served(mesh, "small", "large")) >= 800, 30, message="800 user requests")
    small, large = _served(mesh, "small", "large")
    assert abs(small / (small + large) - 1 / 4) < 0.05, (small, large)  # 1 of 4 instances; by service: 1/2
