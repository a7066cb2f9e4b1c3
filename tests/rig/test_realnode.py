"""The real node: real containers from the project's images, Services, DNS, logs and exec.

Uses the session's ``real_node`` (see tests/conftest.py); each test works in
its own namespace.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simiankube.testing.controlplane import ControlPlane, node, versions
from simiankube.testing.kube import Kube, pod_ready
from simiankube.testing.wait import wait_for

NANOSERVICE_IMAGE = "ghcr.io/simiankube/nanoservice:0.1.0"


@pytest.fixture
def ns(real_node: ControlPlane, request: pytest.FixtureRequest) -> Iterator[Kube]:
    name = "rn-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    real_node.kubectl("create", "namespace", name)
    yield Kube(real_node, name)
    real_node.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_the_node_is_real_labelled_and_alone(real_node: ControlPlane) -> None:
    nodes = json.loads(real_node.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert [n["metadata"]["name"] for n in nodes] == [node.NODE_NAME]  # no kwok unless asked
    labels = nodes[0]["metadata"]["labels"]
    assert labels["topology.kubernetes.io/zone"] == node.NODE_ZONE
    info = nodes[0]["status"]["nodeInfo"]
    assert info["kubeletVersion"] == versions()["K8S_VERSION"]
    assert info["containerRuntimeVersion"] == "containerd://" + versions()["CONTAINERD_VERSION"].removeprefix("v")
    addresses = {a["type"]: a["address"] for a in nodes[0]["status"]["addresses"]}
    assert addresses["InternalIP"] == node.NODE_IP


def test_the_neighbour_table_holds_every_pod_pair(real_node: ControlPlane) -> None:
    # verify has every pod probe every pod: with the kernel's default of 1,024 entries (shared by all
    # network namespaces) ARP requests go unanswered from ~32 pods on and live pods time out.
    for key, minimum in node.NEIGHBOUR_THRESHOLDS.items():
        value = int(Path("/proc/sys", *key.split(".")).read_text())
        assert value >= minimum, key


def test_kubectl_version_reports_the_pinned_release(real_node: ControlPlane) -> None:
    out = json.loads(real_node.kubectl("version", "-o", "json").stdout)
    assert out["clientVersion"]["gitVersion"] == versions()["K8S_VERSION"]
    assert out["serverVersion"]["gitVersion"] == versions()["K8S_VERSION"]


def test_kubernetes_service_has_the_reachable_endpoint(real_node: ControlPlane) -> None:
    slices = json.loads(
        real_node.kubectl(
            "get", "endpointslices", "-n", "default",
            "-l", "kubernetes.io/service-name=kubernetes", "-o", "json",
        ).stdout
    )["items"]  # fmt: skip
    addresses = [a for s in slices for e in s["endpoints"] for a in e["addresses"]]
    assert addresses == [node.NODE_IP]


def _run_pod(ns: Kube, name: str, script: str) -> None:
    ns.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": True,
                "containers": [
                    {
                        "name": "main",
                        "image": NANOSERVICE_IMAGE,
                        "command": ["python3", "-c", script],
                    }
                ],
            },
        }
    )


def test_pods_run_log_exec_and_reach_the_api_by_dns(ns: Kube) -> None:
    # DNS (CoreDNS pod) + the kubernetes Service (kube-proxy) + the API server on the bridge.
    script = (
        "import ssl, time, urllib.request\n"
        "ctx = ssl.create_default_context(cafile="
        "'/var/run/secrets/kubernetes.io/serviceaccount/ca.crt')\n"
        "print(urllib.request.urlopen('https://kubernetes.default.svc.cluster.local/livez',"
        " context=ctx, timeout=10).status, flush=True)\n"
        "time.sleep(600)\n"
    )
    _run_pod(ns, "probe", script)
    def ready() -> dict[str, Any] | None:
        pod = ns.get("pod", "probe")
        return pod if pod_ready(pod) else None

    pod = wait_for(ready, 120, message="pod probe Ready")
    assert pod["spec"]["nodeName"] == node.NODE_NAME
    assert pod["status"]["podIP"].startswith("10.248.0.")
    logs = wait_for(
        lambda: ns.run("logs", "probe", check=False).stdout.strip(), 60, message="probe logs"
    )
    assert logs == "200"
    exec_out = ns.run("exec", "probe", "--", "python3", "-c", "print(6*7)").stdout
    assert exec_out.strip() == "42"


def _resolve(ns: Kube, pod: str, name: str) -> str:
    """getaddrinfo inside ``pod``: the addresses, or the gaierror's errno."""
    script = (
        "import socket, sys\n"
        "try:\n"
        f"    print(sorted({{a[4][0] for a in socket.getaddrinfo({name!r}, 8080)}}))\n"
        "except socket.gaierror as e:\n"
        "    print(e.errno)\n"
    )
    return ns.run("exec", pod, "--", "python3", "-c", script).stdout.strip()


def test_a_headless_service_resolves_as_soon_as_its_pod_is_ready(ns: Kube) -> None:
    # The Corefile caches no cluster.local denial (as kubeadm's and kind's): a lookup made before the
    # pod was ready must not hide it for the cache's 30 s afterwards. Unknown names are NXDOMAIN
    # (EAI_NONAME, -2), not the SERVFAIL (EAI_AGAIN, -3) of a CoreDNS without an upstream.
    server = "import http.server as h; h.HTTPServer(('', 8080), h.SimpleHTTPRequestHandler).serve_forever()"
    _run_pod(ns, "client", "import time; time.sleep(600)")
    wait_for(lambda: pod_ready(ns.get("pod", "client")), 120, message="pod client Ready")
    ns.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "later-peers"},
              "spec": {"clusterIP": "None", "selector": {"app": "later"}, "ports": [{"port": 8080}]}})  # fmt: skip
    assert _resolve(ns, "client", "later-peers") == "-2"
    assert _resolve(ns, "client", "no-such-name") == "-2"
    _run_pod(ns, "later", server)
    pod = wait_for(lambda: next((p for p in [ns.get("pod", "later")] if pod_ready(p)), None), 120,
                   message="pod later Ready")  # fmt: skip
    wait_for(lambda: _resolve(ns, "client", "later-peers") == f"['{pod['status']['podIP']}']", 10,
             interval=1, message="later-peers resolving to the ready pod")  # fmt: skip
