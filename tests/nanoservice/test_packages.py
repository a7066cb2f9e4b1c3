"""Each package's behaviour, with real processes over real sockets."""

from __future__ import annotations

import signal
import time

from simiankube.nanoservice.policy import ring_owner, zone_rings
from simiankube.testing.wait import wait_for

from tests.nanoservice.conftest import Mesh


def test_staash_get_falls_through_a_miss_to_the_next_tier(mesh: Mesh) -> None:
    mesh.load([
        {"name": "evcache", "package": "cache", "count": 1},
        {"name": "mysql", "package": "store", "count": 1},
        {"name": "data", "package": "staash", "count": 1, "dependencies": ["mysql", "evcache"]},
    ])
    mesh.start_all()
    [mysql], [evcache], [data] = mesh.service("mysql"), mesh.service("evcache"), mesh.service("data")
    assert mesh.call(mysql, "PUT", "/kv/k1", {"value": "deep"})[0] == 200

    status, body = mesh.call(data, "GET", "/kv/k1")

    assert (status, body["value"], body["tier"], body["misses"]) == (200, "deep", "mysql", 1)
    assert mesh.metric(evcache, "server_requests_total") == 1  # the cache was asked first
    assert mesh.call(data, "GET", "/kv/nowhere")[0] == 404


def test_staash_put_writes_one_instance_of_every_tier(mesh: Mesh) -> None:
    mesh.load([
        {"name": "evcache", "package": "cache", "count": 3},
        {"name": "mysql", "package": "store", "count": 2},
        {"name": "data", "package": "staash", "count": 1, "dependencies": ["evcache", "mysql"]},
    ])
    mesh.start_all()

    assert mesh.call(mesh.service("data")[0], "PUT", "/kv/k2", {"value": "v"})[0] == 200

    for tier in ("evcache", "mysql"):
        holders = [n for n in mesh.service(tier) if mesh.call(n, "GET", "/kv/k2")[0] == 200]
        assert len(holders) == 1, tier


def test_staash_put_picks_one_instance_per_tier_and_namespaces_volumes_per_instance(mesh: Mesh) -> None:
    """spigo: one Put per tier router (both caches form one tier); volumes get `<staash instance>/key`."""
    mesh.load([
        {"name": "c1", "package": "cache", "count": 1},
        {"name": "c2", "package": "cache", "count": 1},
        {"name": "disk", "package": "volume", "count": 0},
        {"name": "data", "package": "staash", "count": 1, "dependencies": ["c1", "c2", "disk"]},
    ])
    mesh.start_all()
    [data], [disk] = mesh.service("data"), mesh.service("disk")

    status, body = mesh.call(data, "PUT", "/kv/k3", {"value": "v"})

    assert status == 200 and len(body["tiers"]) == 2 and "disk" in body["tiers"]
    caches = [n for s in ("c1", "c2") for n in mesh.service(s) if mesh.call(n, "GET", "/kv/k3")[0] == 200]
    assert len(caches) == 1
    assert mesh.call(disk, "GET", "/kv/k3")[0] == 404
    assert mesh.call(disk, "GET", f"/kv/{data.name}:k3")[1]["value"] == "v"


def test_karyon_prefers_its_zone_and_falls_back_when_the_zone_is_empty(mesh: Mesh) -> None:
    mesh.load([
        {"name": "back", "package": "store", "count": 3},
        {"name": "front", "package": "karyon", "count": 1, "dependencies": ["back"]},
    ])
    back = mesh.service("back")  # zones A, B, C by index
    [front] = mesh.service("front")  # zone A
    same_zone = mesh.start(back[0].name)
    mesh.start(back[1].name, back[2].name, front.name)

    for _ in range(10):
        assert mesh.call(front, "GET", "/kv/x")[0] == 404  # reached a store: a miss, not an error
    assert mesh.metric(back[0], "server_requests_total") == 10
    assert mesh.metric(back[1], "server_requests_total") + mesh.metric(back[2], "server_requests_total") == 0

    same_zone.send_signal(signal.SIGKILL)
    same_zone.wait()
    statuses = [mesh.call(front, "GET", "/kv/x")[0] for _ in range(10)]

    assert statuses == [404] * 10
    assert mesh.metric(back[1], "server_requests_total") + mesh.metric(back[2], "server_requests_total") == 10


def test_elb_spreads_over_every_zone(mesh: Mesh) -> None:
    mesh.load([
        {"name": "back", "package": "store", "count": 3},
        {"name": "lb", "package": "elb", "count": 0, "dependencies": ["back"]},
    ])
    mesh.start_all()
    for _ in range(60):
        mesh.call(mesh.service("lb")[0], "GET", "/kv/x")
    assert all(mesh.metric(n, "server_requests_total") > 5 for n in mesh.service("back"))


def test_store_replicates_puts_to_its_peers_when_self_dependent(mesh: Mesh) -> None:
    mesh.load([{"name": "db", "package": "store", "count": 3, "dependencies": ["db"]}])
    mesh.start_all()
    first, *others = mesh.service("db")

    status, body = mesh.call(first, "PUT", "/kv/k", {"value": "everywhere"})

    assert (status, body["replicating"]) == (200, 2)
    wait_for(lambda: all(mesh.call(n, "GET", "/kv/k")[1].get("value") == "everywhere" for n in others), 5,
             message="copies on both peers")


def test_ring_owner_stores_and_copies_to_the_owner_in_each_other_zone(mesh: Mesh) -> None:
    mesh.load([{"name": "cass", "package": "priamCassandra", "count": 6, "dependencies": ["cass"]}])
    mesh.start_all()
    nodes = {n.name: n for n in mesh.service("cass")}
    rings = zone_rings((n.name, n.instance.zone) for n in nodes.values())
    owners = {zone: ring_owner(ring, "user42") for zone, ring in rings.items()}
    stranger = next(n for n in nodes.values() if n.name not in owners.values())
    owner = owners[stranger.instance.zone]  # the owner in the zone that received the put

    status, body = mesh.call(stranger, "PUT", "/kv/user42", {"value": "gold"})

    assert (status, body["served_by"], body["replicating"]) == (200, owner, 2)

    def holders() -> set[str]:
        return {n for n in nodes if mesh.call(nodes[n], "GET", "/kv/user42?direct=1")[0] == 200}

    wait_for(lambda: holders() == set(owners.values()), 5, message="one copy per zone, at each zone's owner")
    before = {n: mesh.metric(n, "server_requests_total") for n in nodes}
    assert mesh.call(stranger, "GET", "/kv/user42")[1]["value"] == "gold"  # forwarded to its zone's owner
    served = {n for n in nodes if mesh.metric(n, "server_requests_total") > before[n]}
    assert served == {stranger.name, owner}  # the read stayed in the zone


def test_ring_copies_across_regions_only_through_eureka_and_on_to_the_remote_zones(mesh: Mesh) -> None:
    mesh.load([
        {"name": "cass", "package": "priamCassandra", "count": 3, "regions": 2, "dependencies": ["cass", "eureka"]},
        {"name": "solo", "package": "riak", "count": 3, "regions": 2, "dependencies": ["solo"]},
    ])
    mesh.start_all()
    for name in ("cass", "solo"):
        east = [n for n in mesh.service(name) if n.instance.region == "us-east-1"]
        west = [n for n in mesh.service(name) if n.instance.region == "us-west-2"]
        [first] = [n for n in east if n.instance.zone == "zoneA"]
        status, body = mesh.call(first, "PUT", "/kv/k", {"value": "v"})
        assert status == 200
        assert body["replicating"] == (3 if name == "cass" else 2), name  # 2 zones, plus 1 region with eureka
        expected = 3 if name == "cass" else 0  # the remote copy spreads to every zone of the remote region

        def in_west() -> int:
            return sum(1 for n in west if mesh.call(n, "GET", "/kv/k?direct=1")[0] == 200)

        wait_for(lambda: in_west() == expected, 5, message=f"{name}: {expected} copies in us-west-2")
        assert sum(1 for n in east if mesh.call(n, "GET", "/kv/k?direct=1")[0] == 200) == 3


def test_a_put_does_not_wait_for_its_copies_and_failed_copies_are_counted(mesh: Mesh) -> None:
    mesh.load([{"name": "db", "package": "store", "count": 3, "dependencies": ["db"],
                "behavior": {"latency": {"distribution": "constant", "meanMs": 0}, "timeoutMs": 300}}])
    first, second, third = mesh.service("db")
    mesh.start(first.name)
    hung = mesh.start(second.name)
    mesh.start(third.name)
    hung.send_signal(signal.SIGSTOP)  # a copy to it hangs until the copy's own budget runs out
    try:
        started = time.monotonic()
        status, body = mesh.call(first, "PUT", "/kv/k", {"value": "v"})
        elapsed = time.monotonic() - started
        assert (status, body["replicating"]) == (200, 2)
        assert elapsed < 0.25  # well below the 300 ms the hung copy waits
        wait_for(lambda: mesh.metric(first, "replication_failures_total") == 1, 5, message="one failed copy")
        assert mesh.call(third, "GET", "/kv/k")[1]["value"] == "v"
    finally:
        hung.send_signal(signal.SIGCONT)


def test_eureka_serves_the_registry_of_what_it_knows(mesh: Mesh) -> None:
    mesh.load([
        {"name": "back", "package": "store", "count": 2},
        {"name": "eureka", "package": "eureka", "count": 1, "dependencies": ["back"]},
    ])
    mesh.start_all()
    [registry] = mesh.service("eureka")

    status, view = mesh.call(registry, "GET", "/registry")
    found = mesh.call(registry, "GET", "/kv/back")

    assert status == 200
    assert sorted(i["instance"] for i in view["services"]["back"]) == sorted(n.name for n in mesh.service("back"))
    assert all(i["up"] for i in view["services"]["back"])
    assert found[0] == 200 and len(found[1]["instances"]) == 2
    assert mesh.call(registry, "GET", "/kv/unknown")[0] == 404


def test_pirates_chat_never_give_to_themselves_and_keep_the_gold(mesh: Mesh) -> None:
    """spigo's fsm: random-sized donations and name-drops among buddies; no pirate is its own buddy."""
    mesh.load([{"name": "crew", "package": "pirate", "count": 4, "dependencies": ["crew"]}])
    mesh.start_all()
    crew = mesh.service("crew")
    given: list[int] = []
    dropped = 0
    for i in range(60):
        status, body = mesh.call(crew[i % 4], "PUT", "/kv/tick", b"")
        assert status == 200, body
        assert body.get("to") != crew[i % 4].name
        given += [body["given"]] if body.get("given") else []
        dropped += 1 if body.get("namedropped") else 0

    purses = [mesh.call(p, "GET", "/kv/purse")[1] for p in crew]
    assert sum(p["coins"] for p in purses) == 400  # coins move, none are made or lost
    assert all(p["coins"] != 100 for p in purses)
    assert len(set(given)) > 3 and dropped > 10  # donations of many sizes, and gossip
    assert all(p.name not in body["buddies"] for p, body in zip(crew, purses))
    assert mesh.call(crew[0], "POST", "/namedrop", {"instance": crew[0].name})[1]["added"] is False


def test_denominator_sends_gets_and_puts_every_tick(mesh: Mesh) -> None:
    mesh.load(
        [
            {"name": "db", "package": "store", "count": 2},
            {"name": "lb", "package": "elb", "count": 0, "dependencies": ["db"]},
            {"name": "users", "package": "denominator", "count": 0, "regions": 0, "dependencies": ["lb"]},
        ],
        traffic={"intervalMs": 5, "putPercent": 50},
    )
    mesh.start(*(n.name for n in mesh.service("db")), mesh.service("lb")[0].name)
    mesh.start(mesh.service("users")[0].name)
    [lb] = mesh.service("lb")

    wait_for(lambda: mesh.metric(lb, "server_requests_total") >= 100, 20, message="100 requests through the elb")
    [users] = mesh.service("users")
    assert mesh.metric(users, "traffic_errors_total") == 0
    hits = [mesh.call(n, "GET", f"/kv/key{i}")[0] for n in mesh.service("db") for i in range(1000)]
    assert 200 in hits and 404 in hits  # a mix of puts (stored keys) and keys never written
