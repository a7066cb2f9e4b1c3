"""Each package's behaviour, with real processes over real sockets."""

from __future__ import annotations

import signal

from simiankube.nanoservice.policy import replica_per_zone, ring_order
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

    assert (status, body["replicas"]) == (200, 2)
    assert all(mesh.call(n, "GET", "/kv/k")[1].get("value") == "everywhere" for n in others)


def test_ring_owner_stores_and_replicates_one_node_per_other_zone(mesh: Mesh) -> None:
    mesh.load([{"name": "cass", "package": "priamCassandra", "count": 6, "dependencies": ["cass"]}])
    mesh.start_all()
    nodes = {n.name: n for n in mesh.service("cass")}
    zones = {n.name: n.instance.zone for n in nodes.values()}
    order = ring_order(sorted(nodes), "user42")
    owner, replicas = order[0], replica_per_zone(order, zones, order[0])
    stranger = next(n for n in order if n != owner and n not in replicas)

    status, body = mesh.call(nodes[stranger], "PUT", "/kv/user42", {"value": "gold"})

    assert (status, body["served_by"], body["replicas"]) == (200, owner, 2)
    holders = {n for n in nodes if mesh.call(nodes[n], "GET", "/kv/user42?direct=1")[0] == 200}
    assert holders == {owner, *replicas}
    assert len({zones[h] for h in holders}) == 3
    assert mesh.call(nodes[stranger], "GET", "/kv/user42")[1]["value"] == "gold"  # forwarded to the owner


def test_ring_replicates_to_other_regions_only_through_eureka(mesh: Mesh) -> None:
    mesh.load([
        {"name": "cass", "package": "priamCassandra", "count": 3, "regions": 2, "dependencies": ["cass", "eureka"]},
        {"name": "solo", "package": "riak", "count": 3, "regions": 2, "dependencies": ["solo"]},
    ])
    mesh.start_all()
    for name in ("cass", "solo"):
        east = [n for n in mesh.service(name) if n.instance.region == "us-east-1"]
        west = [n for n in mesh.service(name) if n.instance.region == "us-west-2"]
        owner = ring_order([n.name for n in east], "k")[0]
        status, body = mesh.call(next(n for n in east if n.name == owner), "PUT", "/kv/k", {"value": "v"})
        assert status == 200
        in_west = [n for n in west if mesh.call(n, "GET", "/kv/k?direct=1")[0] == 200]
        assert (body["replicas"], len(in_west)) == ((3, 1) if name == "cass" else (2, 0)), name


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


def test_pirates_exchange_coins(mesh: Mesh) -> None:
    mesh.load([
        {"name": "jack", "package": "pirate", "count": 1, "dependencies": ["anne"]},
        {"name": "anne", "package": "pirate", "count": 1, "dependencies": ["jack"]},
    ])
    mesh.start_all()
    [jack], [anne] = mesh.service("jack"), mesh.service("anne")

    for _ in range(3):
        assert mesh.call(jack, "PUT", "/kv/gift", b"")[0] == 200

    assert mesh.call(jack, "GET", "/kv/purse")[1]["coins"] == 97
    assert mesh.call(anne, "GET", "/kv/purse")[1]["coins"] == 103


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
