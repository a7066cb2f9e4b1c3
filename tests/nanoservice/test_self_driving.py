"""Self-driven services and keep-warm calls, as real processes: every declared edge carries calls."""

from __future__ import annotations

from simiankube.localrun.report import read_samples
from simiankube.testing.wait import wait_for
from tests.nanoservice.conftest import Mesh


def served(mesh: Mesh, callee: str, caller: str) -> float:
    """Requests the instances of `callee` served for `caller`."""
    return sum(
        value
        for node in mesh.service(callee)
        for name, labels, value in read_samples(mesh.call(node, "GET", "/metrics")[1]["text"])
        if name == "server_requests_total" and labels.get("caller") == caller
    )


def test_a_service_nobody_calls_drives_itself_and_a_store_copies_to_its_other_dependency(mesh: Mesh) -> None:
    # `worker` is called by nobody: it starts traces (the architecture's rate, spread over its 2 instances);
    # `data` (store) depends on `audit` (staash): its puts are copied there, and audit passes copies on.
    mesh.load(
        [
            {"name": "log", "package": "store", "count": 1},
            {"name": "audit", "package": "staash", "count": 1, "dependencies": ["log"]},
            {"name": "data", "package": "store", "count": 1, "dependencies": ["audit"]},
            {"name": "worker", "package": "karyon", "count": 2, "dependencies": ["data"]},
        ],
        traffic={"selfDriven": True, "intervalMs": 20, "putPercent": 50},
    )
    mesh.start(*(n.name for s in ("log", "audit", "data") for n in mesh.service(s)))
    mesh.start(*(n.name for n in mesh.service("worker")))

    wait_for(lambda: served(mesh, "log", "audit") >= 10, 20, message="copies reach log through audit")
    assert served(mesh, "data", "worker") >= 10 and served(mesh, "audit", "data") >= 10
    workers = mesh.service("worker")
    assert sum(mesh.metric(w, "traffic_requests_total") for w in workers) > 0
    assert sum(mesh.metric(w, "traffic_errors_total") for w in workers) == 0
    assert sum(mesh.metric(n, "replication_failures_total") for n in mesh.service("data")) == 0


def test_an_edge_no_request_takes_gets_a_keep_warm_call(mesh: Mesh) -> None:
    # The traffic source ticks once an hour (its first tick at start); both of the elb's dependencies must
    # still see calls of their own every few seconds.
    mesh.load(
        [
            {"name": "a", "package": "store", "count": 1},
            {"name": "b", "package": "store", "count": 1},
            {"name": "lb", "package": "elb", "count": 0, "dependencies": ["a", "b"]},
            {"name": "users", "package": "denominator", "count": 0, "regions": 0, "dependencies": ["lb"]},
        ],
        traffic={"selfDriven": True, "intervalMs": 3_600_000},
    )
    mesh.start(*(n.name for s in ("a", "b", "lb") for n in mesh.service(s)))
    mesh.start(mesh.service("users")[0].name)

    wait_for(lambda: served(mesh, "a", "lb") >= 2 and served(mesh, "b", "lb") >= 2, 30, interval=0.5,
             message="keep-warm calls on both edges")
    [users] = mesh.service("users")
    assert mesh.metric(users, "traffic_requests_total") == 1  # keep-warm calls are no user requests
