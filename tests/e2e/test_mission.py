"""lamp, riak and the migration on the real node: Ready, traffic on every declared edge only,
policies enforced (`simiankube verify`), chaos kills a real container, delete leaves nothing.

Edges are compared by Kubernetes names on both sides: a pod's metrics name its caller by the
spigo name (``riakTS``), its service label is the Kubernetes name (``riak-ts``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from simiankube import contract
from simiankube.model.generate import generate
from simiankube.model.naming import kube_name
from simiankube.model.spec import load_file, parse_document, to_resource
from simiankube.render.objects import STATEFUL_MAX_UNAVAILABLE
from simiankube.segmentation.reachability import ALLOWED, BLOCKED, MIXED
from simiankube.testing.controlplane import REPO_ROOT, ControlPlane
from simiankube.testing.kube import Kube, pod_ready
from simiankube.testing.wait import wait_for
from tests.e2e.support import NANOSERVICE_CPU_REQUEST

NANOSERVICE_IMAGE = "ghcr.io/simiankube/nanoservice:0.1.0"
# Generous: at load 35-50 (other work on the 2 cores) the migration's step 6 took 193 s and step 7
# more than 300 s; on a quiet machine each step is Ready in under a minute.
READY_TIMEOUT = 600.0
_SERIES = re.compile(r'^simiankube_server_requests_total\{([^}]*)\} ([0-9.e+]+)$', re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def architecture_file(name: str) -> Path:
    return REPO_ROOT / "architectures" / name


def apply_architecture(kube: Kube, resource: dict[str, Any]) -> None:
    kube.run("apply", "-f", "-", input=json.dumps(resource))


def wait_ready(kube: Kube, name: str) -> float:
    began = time.monotonic()
    kube.cp.kubectl("-n", kube.namespace, "wait", f"architecture/{name}", "--for=condition=Ready",
                    f"--timeout={int(READY_TIMEOUT)}s", timeout=READY_TIMEOUT + 30)  # fmt: skip
    return time.monotonic() - began


def declared_edges(resource: dict[str, Any]) -> set[tuple[str, str]]:
    """(caller, callee) pairs the architecture declares, by Kubernetes names; a dependency on the
    registry (``eureka``, not a service of the architecture) is no call."""
    arch = parse_document(resource)
    return {(arch.service(caller).kube_name, arch.service(callee).kube_name) for caller, callee in arch.edges}


def architecture_pods(kube: Kube, name: str) -> list[dict[str, Any]]:
    pods = kube.get("pods", "-l", f"{contract.LABEL_ARCHITECTURE}={name}")["items"]
    return [p for p in pods if pod_ready(p)]


def scrape(cp: ControlPlane, kube: Kube, pod: dict[str, Any]) -> str:
    """A pod's /metrics through the API server's pod proxy; "" when it does not answer (it was Ready
    when listed but is restarting: its counters start again from zero anyway)."""
    path = f"/api/v1/namespaces/{kube.namespace}/pods/{pod['metadata']['name']}:{contract.HTTP_PORT}/proxy/metrics"
    result = cp.kubectl("get", "--raw", path, check=False)
    return result.stdout if result.returncode == 0 else ""


def served_by_caller(cp: ControlPlane, kube: Kube, name: str) -> dict[tuple[str, str], float]:
    """(caller, callee) → requests served, by Kubernetes names, from every pod's /metrics via the API
    server's pod proxy."""
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for pod in architecture_pods(kube, name):
        callee = pod["metadata"]["labels"][contract.LABEL_SERVICE]
        for labels, value in _SERIES.findall(scrape(cp, kube, pod)):
            caller = kube_name(dict(_LABEL.findall(labels))["caller"])
            totals[(caller, callee)] += float(value)
    return dict(totals)


def traffic_totals(cp: ControlPlane, kube: Kube, resource: dict[str, Any]) -> tuple[float, float]:
    """(user requests, failed user requests) the architecture's traffic sources counted so far (a self-driven
    service's traces are its own work, not users')."""
    arch = parse_document(resource)
    sources = {arch.service(name).kube_name for name in arch.traffic_sources}
    requests = errors = 0.0
    for pod in architecture_pods(kube, resource["metadata"]["name"]):
        if pod["metadata"]["labels"].get(contract.LABEL_SERVICE) not in sources:
            continue
        for line in scrape(cp, kube, pod).splitlines():
            if line.startswith("simiankube_traffic_requests_total{"):
                requests += float(line.rsplit(" ", 1)[1])
            elif line.startswith("simiankube_traffic_errors_total{"):
                errors += float(line.rsplit(" ", 1)[1])
    return requests, errors


def verify(cp: ControlPlane, kube: Kube, name: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "simiankube"), "verify", name, "-n", kube.namespace, "--kubeconfig", str(cp.kubeconfig), *options],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def verified(cp: ControlPlane, kube: Kube, name: str) -> tuple[dict[str, Any], int]:
    """`simiankube verify NAME -o json` until it exits 0 → (its report, runs). Each run is a full check.
    A second one is needed when a probe of 1 s times out on a machine loaded far beyond its 2 cores
    (seen at load 60-90: the migration's steps 7 and 8, riak); at a normal load the first run agrees.
    180 s is about six runs on such a machine. Only an allowed path seen blocked earns another run: a
    forbidden path seen open fails at once."""
    results: list[subprocess.CompletedProcess[str]] = []

    def exits_0() -> bool:
        results.append(verify(cp, kube, name, "-o", "json"))
        last = results[-1]
        if last.returncode == 0:
            return True
        open_paths = forbidden_paths_open(json.loads(last.stdout)) if last.stdout.strip() else []
        assert not open_paths, f"{name}: paths the policies forbid were open: {open_paths}"
        return False

    try:
        wait_for(exits_0, 180, interval=5, message=f"{name}: verify exits 0")
    except AssertionError:
        last = results[-1]
        raise AssertionError(f"{name}: verify exited {last.returncode}: {last.stdout[-4000:]}{last.stderr}") from None
    return json.loads(results[-1].stdout), len(results)


def forbidden_paths_open(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(from, to) cells that verify expected blocked but observed open (or open for some pods)."""
    def cells(table: dict[str, Any]) -> dict[tuple[str, str], str]:
        return {(row, column): table["cells"][r][c]
                for r, row in enumerate(table["rows"]) for c, column in enumerate(table["columns"])}

    expected, observed = cells(report["expected"]), cells(report["observed"])
    return [pair for pair, cell in expected.items() if cell == BLOCKED and observed.get(pair) in (ALLOWED, MIXED)]


def runs_with_traffic_on_declared_edges_only(cp: ControlPlane, kube: Kube, resource: dict[str, Any]) -> None:
    """Ready, traffic on every declared edge and on no other pair, verify exits 0 with blocked paths
    observed blocked, delete leaves no child."""
    name = resource["metadata"]["name"]
    apply_architecture(kube, resource)
    seconds = wait_ready(kube, name)
    pods = architecture_pods(kube, name)
    print(f"\n{name} apply -> Ready: {seconds:.1f}s, {len(pods)} pods")
    assert pods and all(c["image"] == NANOSERVICE_IMAGE for p in pods for c in p["spec"]["containers"])
    # The chart value reached the pods (through the operator's flag and the render).
    assert {c["resources"]["requests"]["cpu"] for p in pods for c in p["spec"]["containers"]} == {NANOSERVICE_CPU_REQUEST}
    # The API server keeps the rings' rollout width (KEP-961; a server without it drops the field).
    statefulsets = kube.get("statefulsets", "-l", f"{contract.LABEL_ARCHITECTURE}={name}")["items"]
    assert statefulsets and {s["spec"]["updateStrategy"]["rollingUpdate"].get("maxUnavailable")
                             for s in statefulsets} == {STATEFUL_MAX_UNAVAILABLE}
    services = {s.kube_name for s in parse_document(resource).services}
    edges = declared_edges(resource)

    def every_edge_served() -> dict[tuple[str, str], float] | None:
        served = served_by_caller(cp, kube, name)
        return served if all(served.get(e, 0) > 0 for e in edges) else None

    try:
        served = wait_for(every_edge_served, 180, interval=3, message="traffic on every declared edge")
    except AssertionError:
        served = served_by_caller(cp, kube, name)
        raise AssertionError(f"edges without traffic: {sorted(e for e in edges if served.get(e, 0) <= 0)}") from None
    print(f"{name}: traffic on {len(edges)}/{len(edges)} declared edges")
    undeclared = {pair: n for pair, n in served.items() if pair not in edges and pair[0] in services}
    assert undeclared == {}

    began = time.monotonic()
    report, runs = verified(cp, kube, name)
    print(f"{name} verify: ok after {runs} run(s), {time.monotonic() - began:.1f}s")
    assert report["counts"]["incorrect"] == 0 and report["enforced"] is True, report["counts"]
    blocked = sum(cell == BLOCKED for row in report["observed"]["cells"] for cell in row)
    print(f"{name} verify: {report['counts']['correct']} correct, {blocked} paths observed blocked")
    assert blocked > 0

    kube.cp.kubectl("-n", kube.namespace, "delete", "architecture", name, "--wait=true", "--timeout=180s", timeout=200)

    def children() -> list[str]:
        return kube.run(
            "get", "deploy,statefulset,svc,networkpolicy,configmap,pods", "-l",
            f"{contract.LABEL_ARCHITECTURE}={name}", "-o", "name",
        ).stdout.split()  # fmt: skip

    wait_for(lambda: children() == [], 180, interval=1, message=f"every child of {name} gone")


def test_lamp_runs_for_real_with_traffic_on_declared_edges_only(chart: ControlPlane, restricted: Kube) -> None:
    resource = yaml.safe_load(architecture_file("lamp.yaml").read_text())
    runs_with_traffic_on_declared_edges_only(chart, restricted, resource)


def test_riak_camel_case_names_and_all_runs_for_real(chart: ControlPlane, restricted: Kube) -> None:
    """riak: 51 pods, services named in camelCase (riakTS → riak-ts), a shape lamp does not have."""
    resource = yaml.safe_load(architecture_file("riak.yaml").read_text())
    runs_with_traffic_on_declared_edges_only(chart, restricted, resource)


@pytest.mark.parametrize("shape", ["composeV2", "yogi"])
def test_spigo_shapes_with_self_driven_services_run_for_real(chart: ControlPlane, restricted: Kube, shape: str) -> None:
    """spigo's own files whose traffic sources reach only part of the graph: composeV2 (two traffic sources,
    load balancers nobody calls, a store depending on a staash) and yogi (consumers nobody calls): the
    self-driven services and store copies put calls on every declared edge, in pods as locally."""
    resource = to_resource(load_file(architecture_file(f"spigo/{shape}_arch.json")))
    runs_with_traffic_on_declared_edges_only(chart, restricted, resource)


def test_a_generated_shape_runs_for_real(chart: ControlPlane, restricted: Kube) -> None:
    """A shape nobody wrote by hand (`simiankube generate`): power-law fan-in, five store packages."""
    runs_with_traffic_on_declared_edges_only(chart, restricted, generate(30, seed=2026))


# riak's traffic at spigo's rate (three traffic sources, a trace every 10 ms each: 300 user requests/s, about
# 6 calls each through chains of up to 9 hops) is more than 2 cores carry: its calls time out, retries add load,
# and most user requests fail (locally at load 5: 92% at 10 ms, 0% at 30 ms; `simiankube run` with
# spec.traffic.intervalMs), so no error-free start ever came. Its chaos runs at a rate the node carries.
@pytest.mark.parametrize(("name", "victim", "interval_ms"), [
    ("lamp", "webserver", None),  # one of 18 Deployment pods, spigo's rate
    ("riak", "riakTS", 100),  # one of 6 pods of a ring (a StatefulSet)
])
def test_chaos_kills_a_real_container_and_records_recovery(
    chart: ControlPlane, restricted: Kube, name: str, victim: str, interval_ms: int | None
) -> None:
    resource = yaml.safe_load(architecture_file(f"{name}.yaml").read_text())
    if interval_ms is not None:
        resource["spec"]["traffic"] = {"intervalMs": interval_ms}
    apply_architecture(restricted, resource)
    wait_ready(restricted, name)
    before = {p["metadata"]["uid"] for p in architecture_pods(restricted, name)}
    # Measure the kill from a steady state (requests flowing, no new errors), not from the
    # start-up of the pods.
    last = [traffic_totals(chart, restricted, resource)]

    def steady() -> tuple[float, float] | None:
        now = traffic_totals(chart, restricted, resource)
        previous, last[0] = last[0], now
        return now if now[0] > previous[0] and now[1] == previous[1] else None

    requests_before, errors_before = wait_for(steady, 120, interval=3, message=f"{name}'s traffic error-free")
    restricted.run(
        "patch", "architecture", name, "--type=merge", "-p",
        json.dumps({"spec": {"victim": victim, "chaos": {
            "enabled": True, "intervalSeconds": 10, "minPodAgeSeconds": 0, "maxKills": 1}}}),
    )  # fmt: skip

    def recorded() -> dict[str, Any] | None:
        chaos = restricted.get("architecture", name).get("status", {}).get("chaos", {})
        return chaos if chaos.get("kills", 0) >= 1 and chaos.get("lastRecoverySeconds") is not None else None

    chaos = wait_for(recorded, 240, interval=2, message="a chaos kill and its recovery")
    after = {p["metadata"]["uid"] for p in architecture_pods(restricted, name)}
    assert before - after, "no pod was replaced"
    requests_after, errors_after = traffic_totals(chart, restricted, resource)
    requests = requests_after - requests_before
    share = (errors_after - errors_before) / requests if requests else 0.0
    print(f"\n{name} chaos: {json.dumps(chaos)}; user-visible error share during the kill: {share:.2%} of {requests:.0f}")
    assert requests > 0
    assert share < 0.5  # one pod of several killed: most user requests still succeed
    wait_ready(restricted, name)


@pytest.mark.xfail(
    reason="Passes on a quiet machine, with little margin: on 2026-11-29 (load 24-105) every step was Ready, pruned "
    "and verified, step 9 in 587.8 s of its 600 s (StatefulSets then rolled one pod at a time; now 50% at a time). "
    "Later that day, at load 65-190 (other work on the 2 cores), steps 0-8 passed (step 7: 506 s, step 8: 76 s) and "
    "step 9 (160 pods: 53 new, 105 rolled) was short of Ready at 600 s with ~60 pods in ContainerCreating: the "
    "node's kubelet and containerd starting pods are the queue. Step 8 then 9 on a fresh node (load 38-98): step 9 "
    "Ready in 465 s. Runs, and passes where cores allow",
    strict=False,
)
def test_migration_steps_on_one_architecture(chart: ControlPlane, restricted: Kube) -> None:
    for step in range(10):
        resource = yaml.safe_load(architecture_file(f"migration/step{step}.yaml").read_text())
        resource["metadata"]["name"] = "migration"
        began = time.monotonic()
        apply_architecture(restricted, resource)
        wait_for(  # Ready is judged on the new generation, not the last step's
            lambda: restricted.get("architecture", "migration").get("status", {}).get("observedGeneration")
            == restricted.get("architecture", "migration")["metadata"]["generation"],
            120, message=f"step {step} observed",
        )  # fmt: skip
        wait_ready(restricted, "migration")
        wanted = {kube_name(s["name"]) for s in resource["spec"]["services"]}

        def pruned() -> bool:
            pods = restricted.get("pods", "-l", f"{contract.LABEL_ARCHITECTURE}=migration")["items"]
            services = {p["metadata"]["labels"][contract.LABEL_SERVICE] for p in pods}
            return bool(pods) and all(pod_ready(p) for p in pods) and services <= wanted

        wait_for(pruned, 120, interval=1, message=f"step {step}: only its services run")
        ready = time.monotonic() - began
        report, runs = verified(chart, restricted, "migration")
        assert report["counts"]["incorrect"] == 0, f"step {step}: {report['counts']}"
        print(f"step {step}: Ready and pruned {ready:.1f}s, verify ok after {runs} run(s), "
              f"{time.monotonic() - began - ready:.1f}s")  # fmt: skip
    # The cause of step 9's late Ready before pods' CPU requests could be set: none waited on CPU.
    events = restricted.get("events", "--field-selector", "reason=FailedScheduling")["items"]
    assert [e["message"] for e in events if "Insufficient cpu" in e.get("message", "")] == []
