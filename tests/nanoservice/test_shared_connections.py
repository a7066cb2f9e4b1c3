"""Instances of one worker process share their keep-alive connections: with a pool per instance, a thousand
local instances opened a new connection for nearly every call (about a fifth of the workers' CPU)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess

from simiankube.nanoservice import keys
from simiankube.nanoservice.app import InstanceRunner
from simiankube.nanoservice.client import new_pool
from simiankube.testing.wait import wait_for
from tests.nanoservice.conftest import Mesh


def client_ports(address: str, port: int) -> set[str]:
    """The local ports of the established connections to address:port on this machine."""
    out = subprocess.run(["ss", "-Htn", "state", "established", "dst", f"{address}:{port}"],
                         capture_output=True, text=True, check=True).stdout
    return {line.split()[2].rpartition(":")[2] for line in out.splitlines()}


def test_callers_in_one_process_reuse_one_connection_to_a_callee(mesh: Mesh) -> None:
    nodes = mesh.load([{"name": "web", "package": "karyon", "count": 3, "dependencies": ["db"]},
                       {"name": "db", "package": "store", "count": 1}])
    [db] = mesh.service("db")
    mesh.start(db.name)
    webs = mesh.service("web")
    mesh.start(*(w.name for w in webs))
    for _ in range(3):
        for web in webs:  # one call at a time: a connection is idle again before the next caller needs one
            assert mesh.call(web, "GET", "/kv/why")[0] == 200
    assert mesh.metric(db, "server_requests_total") == 9
    # every call still names its caller, but they all travelled on the one connection the process keeps
    assert len(client_ports(db.address, db.launch.port)) == 1
    assert len(nodes) == 4


async def test_a_shared_pool_outlives_its_instances_and_an_own_pool_does_not(mesh: Mesh) -> None:
    nodes = mesh.load([{"name": "web", "package": "karyon", "count": 2, "dependencies": ["db"]},
                       {"name": "db", "package": "store", "count": 1}])
    shared = new_pool(10.0)
    runners = [InstanceRunner(node.launch.build(pool=shared)) for node in nodes.values()]
    own = InstanceRunner(next(iter(nodes.values())).launch.build())  # a pod: a pool of its own
    for runner in [*runners, own]:
        await runner.setup()
    assert all(r.app[keys.CALLER].pool is shared for r in runners)
    own_pool = own.app[keys.CALLER].pool
    assert own_pool is not shared
    for runner in [*runners, own]:
        await runner.cleanup()
    assert own_pool.closed and not shared.closed  # the process closes the shared one last
    await shared.close()


def test_workers_raise_their_file_limit_to_the_hard_limit(mesh: Mesh) -> None:
    mesh.load([{"name": "db", "package": "store", "count": 1}])
    [db] = mesh.service("db")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))  # what many systems start with
        process = mesh.start(db.name)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    limits = open(f"/proc/{process.pid}/limits").read()
    [line] = [line for line in limits.splitlines() if line.startswith("Max open files")]
    assert line.split()[3] == line.split()[4] == str(hard)



def test_a_call_that_timed_out_still_reads_its_late_answer_and_keeps_the_connection(mesh: Mesh) -> None:
    mesh.load([{"name": "web", "package": "karyon", "count": 1, "dependencies": ["db"],
                "behavior": {"latency": {"distribution": "constant", "meanMs": 0}, "timeoutMs": 300}},
               {"name": "db", "package": "store", "count": 1}])
    [db], [web] = mesh.service("db"), mesh.service("web")
    stalled = mesh.start(db.name)
    mesh.start(web.name)
    assert mesh.call(web, "GET", "/kv/why")[0] == 200
    [port] = client_ports(db.address, db.launch.port)
    os.kill(stalled.pid, signal.SIGSTOP)  # a callee starved of CPU: it answers, but after the caller gave up
    try:
        status, body = mesh.call(web, "GET", "/kv/why")
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    assert status == 504 and "timed out" in body["error"], body
    wait_for(lambda: mesh.metric(db, "server_requests_total") == 2, 5, message="db answered the late call")
    assert mesh.call(web, "GET", "/kv/why")[0] == 200
    # the late answer was read and the connection went back to the pool: no new connection for the next call
    assert client_ports(db.address, db.launch.port) == {port}
