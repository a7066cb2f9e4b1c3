"""kwok: simulated nodes that make pods Running and Ready without a kubelet."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from simiankube.testing.controlplane.binaries import binary

#: Fake nodes kwok manages: (name, zone). Region is ``rig`` for all.
NODES: Final = (("kwok-node-a", "a"), ("kwok-node-b", "b"), ("kwok-node-c", "c"))
#: Label kwok selects the nodes it manages by.
KWOK_NODE_LABEL: Final = ("type", "kwok")
#: Capacity of every fake node: large enough that tests never run out.
NODE_CAPACITY: Final = {"cpu": "32", "memory": "256Gi", "pods": "1000"}
#: kwok's fake pod range (a real node's pod range must not overlap it).
POD_CIDR: Final = "10.244.0.1/16"
#: Taint on the fake nodes when a real node is present: only pods that
#: tolerate it land on them, every other pod on the real node.
FAKE_NODE_TAINT: Final = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}


def argv(*, kubeconfig: Path, port: int) -> list[str]:
    """Command line of kwok, managing only the nodes labelled :data:`KWOK_NODE_LABEL`."""
    return [
        str(binary("kwok")),
        f"--config={binary('kwok-stages.yaml')}",
        f"--kubeconfig={kubeconfig}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-label-selector={KWOK_NODE_LABEL[0]}={KWOK_NODE_LABEL[1]}",
        "--node-ip=127.0.0.1",
        f"--cidr={POD_CIDR}",
        "--node-lease-duration-seconds=40",
        f"--server-address=127.0.0.1:{port}",
    ]


def node_manifest(name: str, zone: str, *, k8s_version: str, tainted: bool) -> dict[str, Any]:
    """A fake Node for kwok to manage."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                KWOK_NODE_LABEL[0]: KWOK_NODE_LABEL[1],
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/agent": "",
                "topology.kubernetes.io/region": "rig",
                "topology.kubernetes.io/zone": zone,
            },
            "annotations": {
                "kwok.x-k8s.io/node": "fake",
                "node.alpha.kubernetes.io/ttl": "0",
            },
        },
        "spec": {"taints": [dict(FAKE_NODE_TAINT)]} if tainted else {},
        "status": {
            "allocatable": dict(NODE_CAPACITY),
            "capacity": dict(NODE_CAPACITY),
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": f"fake-{k8s_version}",
                "kubeProxyVersion": "fake",
            },
        },
    }


def ready_nodes(node_list: dict[str, Any]) -> int:
    """How many nodes of a NodeList have condition Ready=True."""
    ready = 0
    for node in node_list.get("items", []):
        for condition in node.get("status", {}).get("conditions", []):
            if condition.get("type") == "Ready" and condition.get("status") == "True":
                ready += 1
    return ready
