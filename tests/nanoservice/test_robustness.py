"""Budgets, hop limits, retries, ejection, amplification, shutdown, bad requests, probes, traces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from simiankube import contract
from simiankube.localrun.runner import pick_addresses
from simiankube.testing.wait import wait_for

from tests.nanoservice.conftest import FAST, Mesh, http

# Far slower than the budgets and timeouts below, so the bounds on elapsed time keep hundreds of ms of headroom
# for a loaded 2-core machine and still fail when a budget or timeout is not enforced.
SLOW = {"latency": {"distribution": "constant", "meanMs": 1000}}


def chain(mesh: Mesh, leaf_behavior: dict[str, object], leaf_count: int = 1, timeout_ms: float = 500) -> None:
    mesh.load([
        {"name": "c", "package": "store", "count": leaf_count, "behavior": leaf_behavior},
        {"name": "b", "package": "karyon", "count": 1, "dependencies": ["c"],
         "behavior": {**FAST, "timeoutMs": timeout_ms}},
        {"name": "a", "package": "karyon", "count": 1, "dependencies": ["b"],
         "behavior": {**FAST, "timeoutMs": timeout_ms}},
    ])


def test_budget_propagates_and_every_hop_gives_up_in_time(mesh: Mesh) -> None:
    chain(mesh, SLOW)
    mesh.start_all()
    [a], [c] = mesh.service("a"), mesh.service("c")

    started = time.monotonic()
    status, body = mesh.call(a, "GET", "/kv/k", headers={"x-simiankube-deadline-ms": "100"})
    elapsed = time.monotonic() - started

    assert status == 504, body
    assert elapsed < 0.4  # a ignoring its 100 ms budget would wait its 500 ms per-hop timeout
    # the leaf was handed less than 100 ms and stopped working on it by itself
    wait_for(lambda: mesh.metric(c, "server_timeouts_total") == 1, 5, message="leaf timeout counted")
    assert mesh.metric(a, "client_retries_total") == 0  # a 504 is never retried


def test_per_hop_timeout_caps_the_wait_on_a_slow_dependency(mesh: Mesh) -> None:
    chain(mesh, SLOW, timeout_ms=100)
    mesh.start_all()
    started = time.monotonic()
    status, _ = mesh.call(mesh.service("a")[0], "GET", "/kv/k")  # default budget: 2 s
    assert status == 504
    assert time.monotonic() - started < 0.6  # uncapped, the 1 s leaf would answer within the 2 s budget


def test_hop_limit_is_carried_and_enforced_by_services_that_are_not_traffic_sources(mesh: Mesh) -> None:
    chain(mesh, FAST)
    mesh.start_all()
    [a], [b] = mesh.service("a"), mesh.service("b")
    status, body = mesh.call(a, "GET", "/kv/k", headers={"x-simiankube-hops": "3", "x-simiankube-max-hops": "4"})
    assert status == 508, body  # a is hop 3, b hop 4, c would be hop 5
    assert mesh.metric(b, "server_errors_total") == 1
    assert mesh.call(a, "GET", "/kv/k", headers={"x-simiankube-hops": "2", "x-simiankube-max-hops": "4"})[0] == 404


def test_a_hung_instance_is_retried_once_on_a_different_instance(mesh: Mesh) -> None:
    chain(mesh, FAST, leaf_count=2, timeout_ms=200)
    first, second = mesh.service("c")
    hung = mesh.start(first.name)
    mesh.start(second.name, "t-b-us-east-1-0", "t-a-us-east-1-0")
    os.kill(hung.pid, signal.SIGSTOP)
    try:
        statuses = [mesh.call("t-b-us-east-1-0", "GET", "/kv/k")[0] for _ in range(8)]
    finally:
        os.kill(hung.pid, signal.SIGCONT)
    assert statuses == [404] * 8  # every request answered by the live instance
    retries = mesh.metric("t-b-us-east-1-0", "client_retries_total")
    assert 1 <= retries <= 3  # ejected after three timeouts in a row: then never tried again
    assert mesh.metric(second, "server_requests_total") == 8


def test_a_dead_instance_is_ejected_and_used_again_once_it_recovers(mesh: Mesh) -> None:
    chain(mesh, FAST, leaf_count=2)
    first, second = mesh.service("c")
    victim = mesh.start(first.name)
    mesh.start(second.name, "t-b-us-east-1-0")
    victim.send_signal(signal.SIGKILL)
    victim.wait()

    statuses = [mesh.call("t-b-us-east-1-0", "GET", "/kv/k")[0] for _ in range(20)]

    assert statuses == [404] * 20
    assert mesh.metric("t-b-us-east-1-0", "client_retries_total") <= 1  # refused once, then avoided
    view = mesh.call("t-b-us-east-1-0", "GET", "/registry")[1]["services"]["c"]
    assert [i["up"] for i in view if i["instance"] == first.name] == [False]

    mesh.start(first.name)  # the restarted instance, same address
    wait_for(lambda: mesh.call("t-b-us-east-1-0", "GET", "/kv/k")[0] == 404
             and mesh.metric(first, "server_requests_total") > 0, 10, interval=0.1,
             message="the recovered instance gets traffic again")


def test_amplification_with_a_dead_dependency_stays_near_one(mesh: Mesh) -> None:
    """Naive '2 retries at every level' would be 3^3 = 27 attempts per user request here."""
    chain(mesh, FAST, leaf_count=2)
    leaves = mesh.start(*(n.name for n in mesh.service("c")))
    mesh.start("t-b-us-east-1-0", "t-a-us-east-1-0")
    leaves.send_signal(signal.SIGKILL)
    leaves.wait()
    users = 50

    statuses = [mesh.call("t-a-us-east-1-0", "GET", "/kv/k")[0] for _ in range(users)]

    attempts = mesh.metric("t-a-us-east-1-0", "client_requests_total") + mesh.metric("t-b-us-east-1-0",
                                                                                     "client_requests_total")
    assert set(statuses) == {502}
    assert attempts / users <= 1.1  # a→b once each, b→c only until both leaves are ejected


def test_sigterm_lets_in_flight_work_finish_and_exits_zero(tmp_path: Path) -> None:
    """The pod entrypoint: python -m simiankube.nanoservice, configured by env."""
    from simiankube.contract import Behavior, Latency, NanoserviceConfig

    config = NanoserviceConfig("t", "slow", "store", "us-east-1",
                               Behavior(latency=Latency("constant", 800.0)), (), None)
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    [address] = pick_addresses(1)
    env = {**os.environ, contract.ENV_CONFIG: str(path), contract.ENV_INSTANCE: "slow-0",
           contract.ENV_LISTEN: f"{address}:{contract.HTTP_PORT}"}
    process = subprocess.Popen([sys.executable, "-m", "simiankube.nanoservice"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://{address}:{contract.HTTP_PORT}"
    try:
        wait_for(lambda: _ok(f"{base}/readyz"), 20, interval=0.05, message="ready")
        answer: list[int] = []
        thread = threading.Thread(target=lambda: answer.append(http("GET", f"{base}/kv/k")[0]))
        thread.start()
        wait_for(lambda: b"server_requests_total" in _metrics(base) and _in_flight(base), 5, interval=0.02,
                 message="request in flight")
        process.send_signal(signal.SIGTERM)
        thread.join(5)
        assert answer == [404]
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sigterm_fails_readiness_first_and_keeps_answering_until_the_listener_closes(mesh: Mesh) -> None:
    """What keeps a rollout or a chaos kill from refusing requests: readiness turns 503 while the listener
    still accepts and answers (load balancers stop sending), only then does the listener close."""
    mesh.load([{"name": "db", "package": "store", "count": 1}])
    [db] = mesh.service("db")
    worker = mesh.start(db.name, drain_seconds=3.0)
    readyz = mesh.url(db, contract.PATH_READY)

    worker.send_signal(signal.SIGTERM)

    wait_for(lambda: _status(readyz) == 503, 2.5, interval=0.02, message="/readyz 503 while still listening")
    assert mesh.call(db, "GET", "/kv/k")[0] == 404  # a new connection is still accepted and answered
    assert worker.wait(15) == 0
    assert _status(readyz) is None  # now the listener is gone


def test_no_request_fails_while_an_instance_is_stopped_as_in_a_rollout(mesh: Mesh) -> None:
    """SIGTERM of one of two instances under steady traffic: draining, then retries elsewhere, hide it."""
    chain(mesh, FAST, leaf_count=2)
    first, second = mesh.service("c")
    leaving = mesh.start(first.name)
    mesh.start(second.name, "t-b-us-east-1-0")
    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            statuses.append(mesh.call("t-b-us-east-1-0", "GET", "/kv/k")[0])

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        wait_for(lambda: mesh.metric(first, "server_requests_total") >= 20, 10, message="traffic on both")
        leaving.send_signal(signal.SIGTERM)
        assert leaving.wait(15) == 0
        count = len(statuses)
        wait_for(lambda: len(statuses) >= count + 20, 10, message="traffic after the stop")
    finally:
        stop.set()
        thread.join(10)
    assert set(statuses) == {404}, sorted(set(statuses))  # every request answered by a store


def _status(url: str) -> int | None:
    try:
        return http("GET", url, timeout=1)[0]
    except OSError:
        return None


def _ok(url: str) -> bool:
    try:
        return http("GET", url, timeout=1)[0] == 200
    except OSError:
        return False


def _metrics(base: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(f"{base}/metrics", timeout=2) as response:
        return bytes(response.read())


def _in_flight(base: str) -> bool:
    text = _metrics(base).decode()
    requests = [line for line in text.splitlines() if line.startswith("simiankube_server_requests_total")]
    return any(float(line.split()[-1]) >= 1 for line in requests)


def test_bad_requests_get_clear_4xx_answers(mesh: Mesh) -> None:
    mesh.load([{"name": "db", "package": "store", "count": 1}])
    mesh.start_all()
    [db] = mesh.service("db")

    assert mesh.call(db, "PUT", "/kv/k", b"{not json", {"Content-Type": "application/json"})[0] == 400
    status, body = mesh.call(db, "PUT", "/kv/k", {"value": 5})
    assert status == 400 and "value" in body["error"]
    assert mesh.call(db, "POST", "/replicate", {"key": "k"})[0] == 400
    status, body = mesh.call(db, "GET", "/kv/k", headers={"x-simiankube-deadline-ms": "soon"})
    assert status == 400 and "x-simiankube-deadline-ms" in body["error"]
    assert mesh.call(db, "GET", "/kv/" + "k" * 300)[0] == 400
    assert mesh.call(db, "PUT", "/kv/k", b"x" * 100_000, {"Content-Type": "text/plain"})[0] == 413
    assert mesh.call(db, "POST", "/coins", {"coins": 1})[0] == 404  # a store keeps no coins
    assert mesh.call(db, "DELETE", "/kv/k")[0] == 405
    assert mesh.call(db, "GET", "/nothing")[0] == 404
    assert mesh.call(db, "GET", "/healthz")[0] == 200  # still alive after all that


def test_probe_reports_connect_and_healthz_per_target_through_the_hosts_table(mesh: Mesh) -> None:
    mesh.load([{"name": "db", "package": "store", "count": 1}, {"name": "web", "package": "karyon", "count": 1}])
    mesh.start_all()
    [web] = mesh.service("web")
    targets = [
        {"name": "db", "host": "t-db-us-east-1", "port": 8080},  # a Service name, resolved by the table
        {"name": "closed", "host": pick_addresses(1)[0], "port": 8080},  # nothing listens there
        {"name": "unknown", "host": "t-no-such-service", "port": 8080},
    ]

    status, body = mesh.call(web, "POST", "/probe", {"targets": targets, "timeout_ms": 500})

    assert status == 200
    db, closed, unknown = body["results"]
    assert (db["connected"], db["http_status"], db["error"]) == (True, 200, None)
    assert (closed["connected"], closed["http_status"]) == (False, None) and closed["error"]
    assert unknown["connected"] is False and "resolve" in unknown["error"]
    assert all(r["elapsed_ms"] >= 0 for r in body["results"])
    assert mesh.call(web, "POST", "/probe", {"targets": [{"host": "x"}] * 2001})[0] == 400
    assert mesh.call(web, "POST", "/probe", {"targets": [{"host": "x", "port": "80"}]})[0] == 400
    assert mesh.call(web, "POST", "/probe", {"targets": [], "timeout_ms": 0})[0] == 400


def test_traceparent_is_propagated_and_spans_are_exported(mesh: Mesh) -> None:
    chain(mesh, FAST)
    mesh.start_all()
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
    assert mesh.call("t-a-us-east-1-0", "GET", "/kv/k", headers=headers)[0] == 404

    def spans() -> list[dict[str, object]]:
        path = Path(mesh.zipkin)
        lines = path.read_text().splitlines() if path.exists() else []
        return [s for s in map(json.loads, lines) if s["traceId"] == trace]

    found = wait_for(lambda: len(spans()) >= 5 and spans(), 10, message="2 client + 3 server spans")
    services = {(s["localEndpoint"]["serviceName"], s["kind"]) for s in found}  # type: ignore[index]
    assert services == {("a", "SERVER"), ("a", "CLIENT"), ("b", "SERVER"), ("b", "CLIENT"), ("c", "SERVER")}
    by_id = {s["id"]: s for s in found}
    root = next(s for s in found if s["localEndpoint"]["serviceName"] == "a" and s["kind"] == "SERVER")  # type: ignore[index]
    assert root["parentId"] == "00f067aa0ba902b7"
    assert all(s["parentId"] in by_id for s in found if s is not root)  # one connected tree
