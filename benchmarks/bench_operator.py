"""Operator benchmark on the real control plane (the test rig: apiserver, controllers, kwok nodes).

Figures: seconds from `kubectl apply` to `Ready` for netflixoss (65 pods) and a
generated N-service architecture (default 1,000) — and the operator's own share
of it: reconcile seconds (wall: render, plan, every apply, status; mostly
waiting for the API server) and the operator's CPU seconds over the whole
apply → Ready (steady on a loaded machine, unlike wall time) — API writes and
seconds of a no-op resync (target 0 writes), the slowest answer of the
operator's liveness endpoint (/healthz, polled every 0.2 s from apply to
Ready: render and plan run off the event loop), and its peak RSS. The
operator runs as in the tests: a subprocess with the Helm chart's
ServiceAccount token and RBAC. The rig's controller-manager and scheduler run
with upstream's scale-test API rates (simiankube.testing.controlplane.controllers).

Where the wait goes: when the last Deployment, pod, pod binding and pod
readiness happened (from the objects' own timestamps, 1 s resolution; Ready
long after the last pod is the status lagging behind), and the API server's
request seconds by verb and resource from apply to Ready
(``apiserver_request_duration_seconds``, long-running watches left out) with
APF queueing by priority level; and the CPU seconds every rig process and
the operator spent from apply to Ready (the work itself: on a machine with
N free cores, apply → Ready cannot be shorter than their sum over N).

    python benchmarks/bench_operator.py [--services 1000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import urllib.request
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from simiankube.model import generate
from simiankube.testing.operator import OperatorProcess, install_crd, install_operator_identity, metric_samples
from simiankube.testing.controlplane import ControlPlane
from simiankube.testing.wait import wait_for

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"
SYSTEM = "bench-system"


def ready(cp: ControlPlane, name: str) -> bool:
    arch = json.loads(cp.kubectl("-n", NAMESPACE, "get", "architecture", name, "-o", "json").stdout)
    status = arch.get("status") or {}
    return status.get("observedGeneration") == arch["metadata"]["generation"] and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])


def api_server_metrics(cp: ControlPlane) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return metric_samples(cp.kubectl("get", "--raw", "/metrics", timeout=120).stdout)


def api_time(before: dict[tuple[str, frozenset[tuple[str, str]]], float],
             after: dict[tuple[str, frozenset[tuple[str, str]]], float], top: int = 10) -> list[dict[str, Any]]:
    """Where the API server spent its time between two scrapes: requests and seconds by verb and resource,
    the most seconds first (``apiserver_request_duration_seconds``), plus APF queueing by priority level;
    requests on Architectures always."""
    rows: dict[tuple[str, ...], dict[str, float]] = {}
    for (name, labels), value in after.items():
        delta = value - before.get((name, labels), 0.0)
        label = dict(labels)
        if name in ("apiserver_request_duration_seconds_sum", "apiserver_request_duration_seconds_count"):
            if label.get("verb") in ("WATCH", "CONNECT"):  # long-running: their seconds are not work
                continue
            key = (label.get("verb", ""), "/".join(filter(None, (label.get("resource"), label.get("subresource")))))
        elif name in ("apiserver_flowcontrol_request_wait_duration_seconds_sum",
                      "apiserver_flowcontrol_request_wait_duration_seconds_count"):
            key = ("APF wait", label.get("priority_level", ""))
        else:
            continue
        row = rows.setdefault(key, {"requests": 0.0, "seconds": 0.0})
        row["requests" if name.endswith("_count") else "seconds"] += delta
    ranked = sorted(rows.items(), key=lambda item: -item[1]["seconds"])
    # The top ones, and always the Architecture's own (the operator's and kopf's writes of it).
    ranked = [item for i, item in enumerate(ranked) if i < top or "architectures" in item[0][1]]
    return [{"what": " ".join(key), "requests": int(row["requests"]), "seconds": round(row["seconds"], 1),
             "mean_s": round(row["seconds"] / row["requests"], 3) if row["requests"] else 0.0}
            for key, row in ranked]


def epoch(timestamp: str) -> float:
    return datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def timeline(cp: ControlPlane, applied_at: float) -> dict[str, float]:
    """When (seconds after the apply, 1 s resolution) the last of each step happened: where the wait went."""
    def items(kind: str) -> list[dict[str, Any]]:
        return list(json.loads(cp.kubectl("-n", NAMESPACE, "get", kind, "-o", "json", timeout=300).stdout)["items"])

    def last(times: list[str]) -> float:
        return round(max(map(epoch, times)) - applied_at, 1) if times else float("nan")

    pods = items("pods")
    condition_times: dict[str, list[str]] = {"PodScheduled": [], "Ready": []}
    for pod in pods:
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition["type"] in condition_times and condition["status"] == "True":
                condition_times[condition["type"]].append(condition["lastTransitionTime"])
    return {
        "last_deployment_created": last([d["metadata"]["creationTimestamp"] for d in items("deployments")]),
        "last_pod_created": last([p["metadata"]["creationTimestamp"] for p in pods]),
        "last_pod_scheduled": last(condition_times["PodScheduled"]),
        "last_pod_ready": last(condition_times["Ready"]),
    }


def rig_cpu_seconds(cp: ControlPlane, operator_pid: int) -> dict[str, float]:
    """CPU seconds so far of every rig process and the operator: the work apply → Ready costs, whatever the load."""
    state = json.loads(cp.state_file.read_text())
    pids = {process["name"]: process["pid"] for process in state["processes"]}
    return {name: cpu_seconds(pid) for name, pid in {**pids, "operator": operator_pid}.items()}


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class HealthProbe:
    """Polls the operator's /healthz in a thread; keeps the slowest answer (a failure counts as its timeout)."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.url = f"http://127.0.0.1:{port}/healthz"
        self.timeout = timeout
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            began = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout) as response:
                    ok = response.status == 200
            except OSError:
                ok = False
            self.slowest = max(self.slowest, time.monotonic() - began if ok else self.timeout)


def measure(cp: ControlPlane, operator: OperatorProcess, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    name = body["metadata"]["name"]
    assert operator.process is not None
    pid = operator.process.pid
    reconciling = operator.total("simiankube_operator_reconcile_duration_seconds_sum")
    cpu = cpu_seconds(pid)
    rig_cpu = rig_cpu_seconds(cp, pid)
    api_before = api_server_metrics(cp)
    applied_at = time.time()
    began = time.monotonic()
    with HealthProbe(operator.health_port) as probe:
        cp.kubectl("-n", NAMESPACE, "apply", "--server-side", "-f", "-", input=json.dumps(body), timeout=300)
        # Once a second: each read of a 1,000-service Architecture (~0.6 MB) costs the API server too.
        wait_for(lambda: ready(cp, name), timeout, interval=1.0, message=f"{name} Ready")
    seconds = time.monotonic() - began
    cpu = cpu_seconds(pid) - cpu
    rig_cpu = {name: round(seconds - rig_cpu[name], 1) for name, seconds in rig_cpu_seconds(cp, pid).items()}
    api = api_time(api_before, api_server_metrics(cp))
    steps = timeline(cp, applied_at)
    whole = cp.kubectl("-n", NAMESPACE, "get", "architecture", name, "-o", "json", "--show-managed-fields").stdout
    status = json.loads(whole)["status"]

    writes = operator.writes()
    unchanged = operator.total("simiankube_operator_reconciles_total", result="unchanged")
    resync_began = time.monotonic()
    cp.kubectl("-n", NAMESPACE, "annotate", "architecture", name, "bench/resync=1", "--overwrite")
    wait_for(lambda: operator.total("simiankube_operator_reconciles_total", result="unchanged") > unchanged,
             300, interval=0.1, message="the resync")
    result = {
        "architecture": name,
        "services": status["serviceCount"],
        "pods": status["readyInstances"],
        "apply_to_ready_s": round(seconds, 1),
        # The operator's own share: render, plan, apply every object, write status.
        "reconcile_s": round(operator.total("simiankube_operator_reconcile_duration_seconds_sum") - reconciling, 1),
        "operator_cpu_s": round(cpu, 1),
        "slowest_healthz_s": round(probe.slowest, 3),
        "load_average": round(os.getloadavg()[0], 1),
        "noop_resync_s": round(time.monotonic() - resync_began, 2),
        "noop_resync_writes": operator.writes() - writes,
        # What the API server decodes and encodes on every write of it (managedFields included), compact.
        "architecture_kib": round(len(json.dumps(json.loads(whole), separators=(",", ":")).encode()) / 1024),
        "timeline_s": steps,
        "cpu_s": rig_cpu,
        "api_server": api,
    }
    cp.kubectl("-n", NAMESPACE, "delete", "architecture", name, "--wait=true", "--timeout=600s", timeout=620)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=1000, help="size of the generated architecture")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for Ready")
    parser.add_argument("--workdir", type=Path, help="keep the rig's files here (default: a temp dir)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-operator-"))
    workdir.mkdir(parents=True, exist_ok=True)

    netflixoss = yaml.safe_load((REPO / "architectures" / "netflixoss.yaml").read_text())
    generated = generate.generate(args.services, seed=0, name=f"generated-{args.services}")
    rows = []
    with ControlPlane(workdir / "rig") as cp:
        install_crd(cp)
        for namespace in (SYSTEM, NAMESPACE):
            cp.kubectl("create", "namespace", namespace)
        kubeconfig = install_operator_identity(cp, SYSTEM, [NAMESPACE], workdir)
        operator = OperatorProcess(kubeconfig, [NAMESPACE], workdir / "operator.log")
        operator.start()
        try:
            for body in (netflixoss, generated):
                rows.append(measure(cp, operator, body, args.timeout))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            assert operator.process is not None
            rss = peak_rss_mib(operator.process.pid)
        finally:
            operator.stop()
    print(f"{'architecture':<16}{'services':>9}{'pods':>7}{'apply→Ready s':>15}{'reconcile s':>13}"
          f"{'operator CPU s':>16}{'/healthz max s':>16}{'no-op resync s':>16}{'writes':>8}{'load':>6}")
    for row in rows:
        print(f"{row['architecture']:<16}{row['services']:>9}{row['pods']:>7}{row['apply_to_ready_s']:>15}"
              f"{row['reconcile_s']:>13}{row['operator_cpu_s']:>16}{row['slowest_healthz_s']:>16}"
              f"{row['noop_resync_s']:>16}"
              f"{row['noop_resync_writes']:>8.0f}{row['load_average']:>6}")
    print(f"operator peak RSS: {rss:.0f} MiB")
    for row in rows:
        steps = ", ".join(f"{step} {seconds}" for step, seconds in row["timeline_s"].items())
        work = ", ".join(f"{name} {seconds}" for name, seconds in row["cpu_s"].items())
        print(f"\n{row['architecture']} ({row['architecture_kib']} KiB as JSON): seconds after the apply: {steps}, "
              f"Ready {row['apply_to_ready_s']}")
        print(f"  CPU seconds from apply to Ready: {work} (total {sum(row['cpu_s'].values()):.0f})")
        print(f"  API server time from apply to Ready{'':<12}{'requests':>10}{'seconds':>10}{'mean s':>9}")
        for api in row["api_server"]:
            print(f"  {api['what']:<47}{api['requests']:>10}{api['seconds']:>10}{api['mean_s']:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
