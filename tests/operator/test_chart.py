"""The Helm chart: lint, render in both RBAC modes, least privilege, restricted pods."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from simiankube.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "simiankube"


def helm(bin_dir: Path, *args: str) -> str:
    result = subprocess.run([str(bin_dir / "helm"), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def template(bin_dir: Path, *values: str) -> list[dict[str, Any]]:
    sets = [arg for value in values for arg in ("--set", value)]
    out = helm(bin_dir, "template", "sk", str(CHART), "--namespace", "simiankube-system", "--include-crds", *sets)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_chart_crd_is_the_crd() -> None:
    assert (CHART / "crds" / "architecture.yaml").read_text() == (REPO / "crds" / "architecture.yaml").read_text()


def test_helm_lint(rig_binaries: Path) -> None:
    helm(rig_binaries, "lint", "--strict", str(CHART))
    helm(rig_binaries, "lint", "--strict", str(CHART), "--set", "watchNamespaces={a,b}")


def test_cluster_wide_by_default(rig_binaries: Path) -> None:
    docs = template(rig_binaries)
    assert [d["metadata"]["name"] for d in by_kind(docs, "CustomResourceDefinition")] == ["architectures.simiankube.io"]
    assert len(by_kind(docs, "ClusterRole")) == 1 and len(by_kind(docs, "ClusterRoleBinding")) == 1
    assert not by_kind(docs, "Role")
    (deployment,) = by_kind(docs, "Deployment")
    assert "--all-namespaces" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_namespaced_rbac_when_namespaces_are_listed(rig_binaries: Path) -> None:
    docs = template(rig_binaries, "watchNamespaces={team-a,team-b}")
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in by_kind(docs, "Role")) == ["team-a", "team-b"]
    for role in by_kind(docs, "Role"):  # nothing cluster-scoped in namespaced mode
        assert not [rule for rule in role["rules"] if "namespaces" in rule["resources"]]
    for binding in by_kind(docs, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "sk-simiankube",
                                        "namespace": "simiankube-system"}]
    (deployment,) = by_kind(docs, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args and "--all-namespaces" not in args


def test_rbac_is_least_privilege(rig_binaries: Path) -> None:
    (role,) = by_kind(template(rig_binaries), "ClusterRole")
    granted = {(group, resource): set(rule["verbs"]) for rule in role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]}
    assert all("*" not in verbs for verbs in granted.values())
    assert not any("*" in key for key in granted)
    assert ("", "secrets") not in granted
    assert granted[("", "pods")] == {"get", "list", "delete"}
    assert granted[("simiankube.io", "architectures")] == {"get", "list", "watch", "patch"}
    assert "delete" not in granted[("simiankube.io", "architectures")]
    # Segmentation verification: probes are POSTs through the pod proxy; namespaces are listed for their labels.
    assert granted[("", "pods/proxy")] == {"create"}
    assert granted[("", "namespaces")] == {"list"}
    assert granted[("networking.k8s.io", "networkpolicies")] >= {"list"}
    assert all(not verbs & {"update", "deletecollection", "escalate", "bind", "impersonate"}
               for (_, resource), verbs in granted.items() if resource != "architectures/finalizers")


def test_operator_pod_meets_pod_security_restricted(rig_binaries: Path) -> None:
    (deployment,) = by_kind(template(rig_binaries), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


@pytest.mark.parametrize("values", [(), ("watchNamespaces={a}", "chaos.mode=dry-run", "logLevel=debug")])
def test_operator_args_are_accepted_by_the_cli(rig_binaries: Path, values: tuple[str, ...]) -> None:
    (deployment,) = by_kind(template(rig_binaries, *values), "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    parsed = build_parser().parse_args(["operator", *args])
    assert parsed.nanoservice_image == "simiankube/nanoservice:0.1.0"
    assert parsed.liveness == "http://0.0.0.0:8080/healthz"


def test_kind_workflow_is_in_step_with_the_chart_and_the_repo() -> None:
    """The e2e workflow cannot run here (no Docker); check what it relies on instead."""
    text = (REPO / ".github" / "workflows" / "e2e-kind.yml").read_text()
    workflow = yaml.safe_load(text)
    steps = workflow["jobs"]["e2e"]["steps"]
    scripts = "\n".join(step.get("run", "") for step in steps)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in ("image.repository", "image.tag", "nanoservice.image", "watchNamespaces"):
        assert f"{key}=" in scripts, key
        node = values  # and the chart has the value
        for part in key.split("."):
            node = node[part]
    for path in ("operator/Dockerfile", "nanoservice/Dockerfile", "architectures/lamp.yaml", "helm/simiankube"):
        assert path in scripts and (REPO / path).exists(), path
    # Release "simiankube" of chart "simiankube": the Deployment is named "simiankube".
    assert "helm install simiankube helm/simiankube" in scripts and "deploy/simiankube" in scripts
    assert "--for=condition=Ready" in scripts and "status.chaos.kills" in scripts
