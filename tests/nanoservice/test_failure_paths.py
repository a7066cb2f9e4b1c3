"""Failure paths that a plausible mistake in the product code would break silently otherwise.

Each test names the mistake it catches: the cross-region order reversed where
calls are made, outlier ejection without its doubling or without the fall-back
to instances ejected only for timeouts, and a probe's timeout path (a dropped
SYN, not a refused connection).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from simiankube import contract
from simiankube.nanoservice.client import SOFT_FAILURES_TO_EJECT, Health

from tests.nanoservice.conftest import FAST, Mesh


def test_calls_stay_in_the_own_region_and_cross_only_through_eureka_when_it_is_empty(mesh: Mesh) -> None:
    """Catches the region order reversed at the call site: other regions are the fallback, never first."""
    mesh.load([
        {"name": "eureka", "package": "eureka", "count": 1, "regions": 2},
        {"name": "db", "package": "store", "count": 1, "regions": 2},
        # every dependency on each request, so each request reaches db (spigo's default picks one)
        {"name": "web", "package": "karyon", "count": 1, "regions": 2, "dependencies": ["db", "eureka"],
         "behavior": {"fanout": "all"}},
        {"name": "solo", "package": "karyon", "count": 1, "regions": 2, "dependencies": ["db"]},
    ])
    [east_db] = [n for n in mesh.service("db") if n.instance.region == "us-east-1"]
    [west_db] = [n for n in mesh.service("db") if n.instance.region == "us-west-2"]
    [web] = [n for n in mesh.service("web") if n.instance.region == "us-east-1"]
    [solo] = [n for n in mesh.service("solo") if n.instance.region == "us-east-1"]
    east = mesh.start(east_db.name)
    mesh.start(*(n for n in mesh.nodes if n != east_db.name))

    assert [mesh.call(web, "GET", "/kv/k")[0] for _ in range(20)] == [404] * 20
    assert (mesh.metric(east_db, "server_requests_total"), mesh.metric(west_db, "server_requests_total")) == (20, 0)

    east.send_signal(signal.SIGKILL)
    east.wait()
    assert [mesh.call(web, "GET", "/kv/k")[0] for _ in range(10)] == [404] * 10  # the other region, via eureka
    assert mesh.metric(west_db, "server_requests_total") == 10
    assert mesh.call(solo, "GET", "/kv/k")[0] == 502  # without eureka no other region is visible
    assert mesh.metric(west_db, "server_requests_total") == 10


def test_ejection_doubles_on_repeats_up_to_the_maximum() -> None:
    """Catches ejection without its doubling: a dead instance would be probed every base interval."""
    health = Health(base_seconds=1.0, max_seconds=10.0)
    lengths = []
    for _ in range(6):
        health.failure("a", hard=True)
        lengths.append(round(health.until["a"] - time.monotonic()))
        health.until["a"] = 0.0  # the timer ran out: the next request probes it, and is refused again
        assert health.ejected() == set()
    assert lengths == [1, 2, 4, 8, 10, 10]
    health.success("a")
    health.failure("a", hard=True)
    assert round(health.until["a"] - time.monotonic()) == 1  # a success starts over


def test_an_instance_ejected_thousands_of_times_stays_at_the_maximum() -> None:
    """Catches an unbounded exponent: under overload a traffic source ejected one callee over 1,024 times in a
    run, and 2 ** 1024 raised OverflowError in every user request after that (each logged with a traceback)."""
    health = Health(base_seconds=1.0, max_seconds=10.0)
    for _ in range(3 * 1100):  # three timeouts in a row eject it again
        health.failure("a", hard=False)
    assert health.ejections["a"] == 1100
    assert 9 < health.until["a"] - time.monotonic() <= 10


def test_instances_ejected_for_timeouts_are_still_used_when_nothing_else_is_left(mesh: Mesh) -> None:
    """Catches the fall-back removed: an overloaded (slow) only instance is not treated as dead."""
    mesh.load([
        {"name": "db", "package": "store", "count": 1},
        {"name": "web", "package": "karyon", "count": 1, "dependencies": ["db"],
         "behavior": {**FAST, "timeoutMs": 200}},
    ])
    [db], [web] = mesh.service("db"), mesh.service("web")
    slow = mesh.start(db.name)
    mesh.start(web.name)
    os.kill(slow.pid, signal.SIGSTOP)
    try:
        statuses = [mesh.call(web, "GET", "/kv/k")[0] for _ in range(SOFT_FAILURES_TO_EJECT)]
    finally:
        os.kill(slow.pid, signal.SIGCONT)
    assert statuses == [504] * SOFT_FAILURES_TO_EJECT
    view = mesh.call(web, "GET", "/registry")[1]["services"]["db"]
    assert [i["up"] for i in view] == [False]  # ejected for timeouts ...
    assert mesh.call(web, "GET", "/kv/k")[0] == 404  # ... and still used: nothing else is left


CHAIN = f"SKPROBE-{os.getpid()}"


@pytest.fixture
def drop_chain() -> Iterator[str]:
    """A private iptables chain jumped to from OUTPUT; removed whatever happens."""
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        pytest.fail("needs root and iptables (apt-get install -y iptables) to drop packets")

    def iptables(*args: str) -> None:
        subprocess.run(["iptables", "-w", *args], check=True, capture_output=True)

    iptables("-N", CHAIN)
    iptables("-I", "OUTPUT", "-j", CHAIN)
    try:
        yield CHAIN
    finally:
        iptables("-D", "OUTPUT", "-j", CHAIN)
        iptables("-F", CHAIN)
        iptables("-X", CHAIN)


def test_a_probe_of_a_target_whose_packets_are_dropped_times_out(mesh: Mesh, drop_chain: str) -> None:
    """A NetworkPolicy drop looks like this: no refusal, no answer; the probe says 'timeout' in time."""
    mesh.load([{"name": "db", "package": "store", "count": 1}, {"name": "web", "package": "karyon", "count": 1}])
    mesh.start_all()
    [web], [db] = mesh.service("web"), mesh.service("db")
    subprocess.run(["iptables", "-w", "-A", drop_chain, "-d", db.address, "-p", "tcp", "--dport",
                    str(contract.HTTP_PORT), "--tcp-flags", "SYN,ACK", "SYN", "-j", "DROP"], check=True)

    started = time.monotonic()
    status, body = mesh.call(web, "POST", "/probe", {"targets": [{"host": db.address, "port": 8080}],
                                                     "timeout_ms": 500})
    elapsed = time.monotonic() - started

    assert status == 200
    [result] = body["results"]
    assert (result["connected"], result["http_status"], result["error"]) == (False, None, "timeout")
    assert 450 <= result["elapsed_ms"] < 1500  # waited its timeout, not more (headroom for a loaded machine)
    assert elapsed < 3
