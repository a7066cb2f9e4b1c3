"""Real-node benchmark: the whole mission on real containers (root; one real node per machine).

Figures: `up --real-node` seconds (binaries and images cached), lamp and
netflixoss `kubectl apply` → Ready seconds, memory per nanoservice pod (the
kubelet's working set) and of the node's components (RSS of containerd,
kubelet, kube-proxy, kube-router; the runc shims), and `simiankube verify`
seconds for each architecture.

    python benchmarks/bench_node.py [--workdir DIR] [-o json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from simiankube.testing.controlplane import ControlPlane, binary, node, read_state

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
ARCHITECTURES = ("lamp", "netflixoss")


def helm(cp: ControlPlane, *args: str) -> None:
    env = dict(os.environ, KUBECONFIG=str(cp.kubeconfig))
    subprocess.run([str(binary("helm")), *args], check=True, env=env, cwd=REPO, capture_output=True, timeout=600)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def shims_rss_mib(cp: ControlPlane) -> tuple[int, float]:
    socket_path = str(cp.workdir / "node" / "containerd" / "containerd.sock").encode()
    count, total = 0, 0.0
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if entry.name.isdigit() and b"containerd-shim" in cmdline and socket_path in cmdline:
                count, total = count + 1, total + rss_mib(int(entry.name))
        except OSError:
            continue
    return count, total


def memory(cp: ControlPlane, namespace: str) -> dict[str, Any]:
    summary = json.loads(cp.kubectl("get", "--raw", f"/api/v1/nodes/{node.NODE_NAME}/proxy/stats/summary").stdout)
    pods = [
        p["memory"]["workingSetBytes"] / MIB
        for p in summary["pods"]
        if p["podRef"]["namespace"] == namespace and "memory" in p
    ]
    state = read_state(cp.workdir) or {}
    components = {
        p["name"]: round(rss_mib(p["pid"]), 1)
        for p in state.get("processes", [])
        if p["name"] in ("containerd", "kubelet", "kube-proxy", "kube-router")
    }
    shims, shim_mib = shims_rss_mib(cp)
    return {
        "pods": len(pods),
        "pod_working_set_mib_mean": round(statistics.mean(pods), 1) if pods else None,
        "pod_working_set_mib_max": round(max(pods), 1) if pods else None,
        "components_rss_mib": components,
        "shims": shims,
        "shims_rss_mib": round(shim_mib, 1),
        "node_working_set_mib": round(summary["node"]["memory"]["workingSetBytes"] / MIB, 1),
    }


def measure(cp: ControlPlane, name: str) -> dict[str, Any]:
    namespace = f"bench-{name}"
    cp.kubectl("create", "namespace", namespace)
    cp.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    began = time.monotonic()
    cp.kubectl("-n", namespace, "apply", "-f", str(REPO / "architectures" / f"{name}.yaml"))
    cp.kubectl("-n", namespace, "wait", f"architecture/{name}", "--for=condition=Ready", "--timeout=900s", timeout=920)
    ready = time.monotonic() - began
    time.sleep(10)  # let traffic run before memory is read
    figures = {"apply_to_ready_s": round(ready, 1), "memory": memory(cp, namespace)}
    began = time.monotonic()
    verify = subprocess.run(
        [str(Path(sys.executable).parent / "simiankube"), "verify", name, "-n", namespace,
         "--kubeconfig", str(cp.kubeconfig)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    figures["verify_s"] = round(time.monotonic() - began, 1)
    figures["verify_exit"] = verify.returncode
    cp.kubectl("-n", namespace, "delete", "architecture", name, "--wait=true", "--timeout=300s", timeout=320)
    cp.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=300s", timeout=320)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="rig directory (default: a temporary one)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-node-")) / "rig"
    cp = ControlPlane(workdir, real_node=True)
    began = time.monotonic()
    cp.start()
    results: dict[str, Any] = {"up_real_node_s": round(time.monotonic() - began, 1)}
    try:
        helm(cp, "install", "sk", "helm/simiankube", "-n", "simiankube-system", "--create-namespace",
             "--wait", "--timeout", "5m")  # fmt: skip
        for name in ARCHITECTURES:
            results[name] = measure(cp, name)
    finally:
        began = time.monotonic()
        cp.stop()
        results["down_s"] = round(time.monotonic() - began, 1)
    if args.output == "json":
        print(json.dumps(results, indent=2))
    else:
        print(f"up --real-node (cached): {results['up_real_node_s']} s; down: {results['down_s']} s")
        for name in ARCHITECTURES:
            r = results[name]
            m = r["memory"]
            print(
                f"{name}: apply->Ready {r['apply_to_ready_s']} s, verify {r['verify_s']} s (exit {r['verify_exit']}), "
                f"{m['pods']} pods, working set/pod mean {m['pod_working_set_mib_mean']} MiB "
                f"max {m['pod_working_set_mib_max']} MiB, node {m['node_working_set_mib']} MiB, "
                f"components RSS {m['components_rss_mib']} MiB, {m['shims']} shims {m['shims_rss_mib']} MiB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
