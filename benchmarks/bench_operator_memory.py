"""The operator's memory with many objects that are not its own (the test rig: apiserver, controllers, kwok).

Figures: the operator's peak RSS (VmHWM) after lamp is Ready, watching one
namespace that also holds N unrelated Deployments (default 1,000, replicas 0,
so no pods) and N unrelated ConfigMaps, against the same run with none; and
the seconds from a `kubectl scale` of one of lamp's Deployments until the
operator has restored its replicas (drift repair), in each. Every watch
the operator holds on workloads and other children filters by label on the
server (kopf watches Architectures only), so the two should match.

    python benchmarks/bench_operator_memory.py [--unrelated 1000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from simiankube.testing.operator import OperatorProcess, install_crd, install_operator_identity
from simiankube.testing.controlplane import ControlPlane
from simiankube.testing.wait import wait_for

REPO = Path(__file__).resolve().parents[1]
SYSTEM = "bench-system"


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def unrelated(namespace: str, count: int) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for i in range(count):
        labels = {"app": f"other-{i}"}
        items.append({"apiVersion": "apps/v1", "kind": "Deployment",
                      "metadata": {"name": f"other-{i}", "namespace": namespace, "labels": labels},
                      "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                               "template": {"metadata": {"labels": labels},
                                            "spec": {"containers": [{"name": "c", "image": "example.com/x:1"}]}}}})
        items.append({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": f"other-{i}", "namespace": namespace}, "data": {"k": "v" * 512}})
    return {"apiVersion": "v1", "kind": "List", "items": items}


def run(cp: ControlPlane, workdir: Path, namespace: str, count: int) -> tuple[float, float]:
    cp.kubectl("create", "namespace", namespace)
    if count:
        cp.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(unrelated(namespace, count)), timeout=600)
    kubeconfig = install_operator_identity(cp, SYSTEM, [namespace], workdir / namespace)
    operator = OperatorProcess(kubeconfig, [namespace], workdir / f"{namespace}.log")
    operator.start(timeout=120)
    try:
        lamp: dict[str, Any] = yaml.safe_load((REPO / "architectures" / "lamp.yaml").read_text())
        cp.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(lamp))

        def ready() -> bool:
            arch = json.loads(cp.kubectl("-n", namespace, "get", "architecture", "lamp", "-o", "json").stdout)
            return any(c["type"] == "Ready" and c["status"] == "True"
                       for c in (arch.get("status") or {}).get("conditions") or [])

        wait_for(ready, 300, interval=0.5, message="lamp Ready")
        workload = "lamp-webserver-us-east-1"

        def replicas() -> int:
            return int(json.loads(cp.kubectl("-n", namespace, "get", "deployment", workload, "-o", "json").stdout)[
                "spec"]["replicas"])

        rendered = replicas()
        began = time.monotonic()
        cp.kubectl("-n", namespace, "scale", "deployment", workload, f"--replicas={rendered + 5}")
        wait_for(lambda: replicas() == rendered, 60, interval=0.1, message="the scale undone")
        repair = time.monotonic() - began
        assert operator.process is not None
        return peak_rss_mib(operator.process.pid), repair
    finally:
        operator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unrelated", type=int, default=1000, help="unrelated Deployments (and ConfigMaps)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-operator-memory-") as tmp:
        workdir = Path(tmp)
        cp = ControlPlane(workdir / "cp")
        cp.start()
        try:
            install_crd(cp)
            cp.kubectl("create", "namespace", SYSTEM)
            alone, alone_repair = run(cp, workdir, "bench-alone", 0)
            crowded, crowded_repair = run(cp, workdir, "bench-crowded", args.unrelated)
        finally:
            cp.stop()
    print(f"lamp alone: operator peak RSS {alone:.0f} MiB; kubectl scale undone in {alone_repair:.1f} s")
    print(f"lamp + {args.unrelated} unrelated Deployments and ConfigMaps: operator peak RSS {crowded:.0f} MiB; "
          f"kubectl scale undone in {crowded_repair:.1f} s")


if __name__ == "__main__":
    main()
