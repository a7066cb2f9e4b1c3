"""The rig runs real controllers: Deployments make pods that kwok runs on zoned nodes,
ReplicaSets replace deleted pods, the garbage collector removes dependents.

Each test would fail against a mock API server: nothing but the real
controllers, scheduler and kwok make these objects appear or disappear.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from simiankube.testing.wait import wait_for
from simiankube.testing.kube import Kube, pod_ready

pytestmark = pytest.mark.controlplane

TIMEOUT = 60.0


def deployment(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "example.invalid/app:1"}]},
            },
        },
    }


def ready_pods(kube: Kube, selector: str, count: int) -> list[dict[str, Any]] | None:
    pods = [p for p in kube.pods(selector) if pod_ready(p)]
    return pods if len(pods) == count else None


def test_deployment_pods_run_on_zone_labelled_nodes(kube: Kube) -> None:
    kube.apply(deployment("web", 6))

    pods = wait_for(
        lambda: ready_pods(kube, "app=web", 6), TIMEOUT, message="6 Running+Ready pods"
    )

    nodes = {n["metadata"]["name"]: n for n in kube.get("nodes")["items"]}
    zones = set()
    for pod in pods:
        node = nodes[pod["spec"]["nodeName"]]
        labels = node["metadata"]["labels"]
        assert labels["type"] == "kwok"
        assert labels["topology.kubernetes.io/region"] == "rig"
        assert labels["topology.kubernetes.io/zone"] in {"a", "b", "c"}
        zones.add(labels["topology.kubernetes.io/zone"])
        assert pod["status"]["podIP"].startswith("10.244.")
    # the default scheduler spreads replicas across nodes
    assert len(zones) >= 2
    status = kube.get("deployment", "web")["status"]
    wait_for(
        lambda: kube.get("deployment", "web")["status"].get("readyReplicas") == 6,
        TIMEOUT,
        message="deployment readyReplicas=6",
    )
    assert status["replicas"] == 6


def test_replicaset_replaces_a_deleted_pod(kube: Kube) -> None:
    kube.apply(deployment("api", 2))
    before = wait_for(lambda: ready_pods(kube, "app=api", 2), TIMEOUT, message="2 ready pods")
    victim = before[0]["metadata"]["name"]
    owner = before[0]["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ReplicaSet"

    kube.run("delete", "pod", victim, "--wait=false")

    def replaced() -> list[dict[str, Any]] | None:
        pods = kube.pods("app=api")
        names = {p["metadata"]["name"] for p in pods}
        fresh = [p for p in pods if pod_ready(p)]
        if victim in names or len(fresh) != 2:
            return None
        return fresh

    after = wait_for(replaced, TIMEOUT, message="deleted pod replaced by its ReplicaSet")
    new = [p for p in after if p["metadata"]["name"] not in {q["metadata"]["name"] for q in before}]
    assert len(new) == 1
    assert new[0]["metadata"]["ownerReferences"][0]["uid"] == owner["uid"]


def test_garbage_collector_deletes_dependents_of_a_deleted_owner(kube: Kube) -> None:
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}})
    owner_uid = kube.get("configmap", "owner")["metadata"]["uid"]
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "dependent",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}
                ],
            },
        }
    )
    # A bystander without owner proves the collector is selective.
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bystander"}})

    kube.run("delete", "configmap", "owner")

    def configmaps() -> set[str]:
        return {c["metadata"]["name"] for c in kube.get("configmaps")["items"]}

    wait_for(lambda: "dependent" not in configmaps(), TIMEOUT, message="dependent collected")
    assert "bystander" in configmaps()


def test_deleting_a_deployment_collects_its_replicasets_and_pods(kube: Kube) -> None:
    kube.apply(deployment("doomed", 2))
    wait_for(lambda: ready_pods(kube, "app=doomed", 2), TIMEOUT, message="2 ready pods")
    assert kube.get("replicasets", "-l", "app=doomed")["items"]

    kube.run("delete", "deployment", "doomed", "--cascade=background", "--wait=false")

    wait_for(
        lambda: not kube.get("replicasets", "-l", "app=doomed")["items"]
        and not kube.pods("app=doomed"),
        TIMEOUT,
        message="ReplicaSets and pods garbage-collected",
    )


def test_statefulset_creates_ordered_stable_pods(kube: Kube) -> None:
    manifest = deployment("db", 3)
    manifest["kind"] = "StatefulSet"
    manifest["spec"]["serviceName"] = "db"
    kube.apply(manifest)

    pods = wait_for(lambda: ready_pods(kube, "app=db", 3), TIMEOUT, message="3 ready pods")

    assert sorted(p["metadata"]["name"] for p in pods) == ["db-0", "db-1", "db-2"]


def test_kubectl_reaches_only_the_rig(kube: Kube) -> None:
    """The admin kubeconfig points at the loopback API server with TLS."""
    result: subprocess.CompletedProcess[str] = kube.cp.kubectl("config", "view", "--minify", "-o", "json")
    assert f'"server": "{kube.cp.server}"' in result.stdout
    assert kube.cp.server.startswith("https://127.0.0.1:")
