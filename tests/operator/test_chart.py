"""The Helm chart: lint, render in both RBAC modes, least privilege, restricted pods."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from simiankube.cli import build_parser
from simiankube.render.settings import RenderSettings

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
    assert parsed.nanoservice_image == "ghcr.io/simiankube/nanoservice:0.1.0" == RenderSettings.image
    assert parsed.liveness == "http://0.0.0.0:8080/healthz"


def chart_defaults() -> tuple[str, dict[str, Any]]:
    """The chart's appVersion and its values."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return str(chart["appVersion"]), yaml.safe_load((CHART / "values.yaml").read_text())


def test_default_images_are_the_released_ones_at_the_app_version(rig_binaries: Path) -> None:
    app_version, _ = chart_defaults()
    assert app_version == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    (container,) = by_kind(template(rig_binaries), "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/simiankube/operator:{app_version}"
    assert f"--nanoservice-image=ghcr.io/simiankube/nanoservice:{app_version}" in container["args"]
    (container,) = by_kind(template(rig_binaries, "image.tag=dev", "nanoservice.image.repository=local/nano",
                                    "nanoservice.image.tag=dev"), "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/simiankube/operator:dev"
    assert "--nanoservice-image=local/nano:dev" in container["args"]


def workflow_scripts(name: str) -> tuple[dict[Any, Any], str]:
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    return workflow, "\n".join(step.get("run", "") for step in steps)


def test_kind_workflow_is_in_step_with_the_chart_and_the_repo() -> None:
    """The e2e workflow cannot run here (no Docker); check what it relies on instead."""
    _, scripts = workflow_scripts("e2e-kind.yml")
    _, values = chart_defaults()
    # The images are built by `make images` and loaded under the names rig/images.sh
    # lists, which the chart uses by default: the install sets no image.
    assert "make images" in scripts and "\nimages:" in (REPO / "Makefile").read_text()
    assert "rig/images.sh list nanoservice operator" in scripts and "kind load docker-image" in scripts
    assert "image.repository=" not in scripts and "image.tag=" not in scripts
    assert "watchNamespaces=" in scripts and "watchNamespaces" in values
    for path in ("architectures/lamp.yaml", "helm/simiankube", "architectures/migration/step"):
        assert path in scripts, path
    assert "seq 0 9" in scripts and sorted(p.name for p in (REPO / "architectures" / "migration").glob("step*.yaml")) \
        == [f"step{i}.yaml" for i in range(10)]
    # Release "simiankube" of chart "simiankube": the Deployment is named "simiankube".
    assert "helm install simiankube helm/simiankube" in scripts and "deploy/simiankube" in scripts
    assert "--for=condition=Ready" in scripts and "status.chaos.kills" in scripts
    assert "simiankube verify lamp" in scripts and "simiankube verify migration" in scripts
    assert "helm uninstall simiankube" in scripts


def test_release_workflow_pushes_the_chart_defaults_multi_arch() -> None:
    workflow, scripts = workflow_scripts("release.yml")
    _, values = chart_defaults()
    assert workflow[True]["push"]["tags"] == ["v*"]  # YAML 1.1 reads the key `on` as True
    (build,) = [step for step in workflow["jobs"]["images"]["steps"] if "build-push-action" in step.get("uses", "")]
    prefix = workflow["env"]["IMAGE_PREFIX"]
    components = workflow["jobs"]["images"]["strategy"]["matrix"]["component"]
    assert sorted(components) == ["nanoservice", "operator"]
    assert values["image"]["repository"] == f"{prefix}/operator"
    assert values["nanoservice"]["image"]["repository"] == f"{prefix}/nanoservice"
    assert build["with"]["file"] == "${{ matrix.component }}/Dockerfile"
    assert all((REPO / component / "Dockerfile").exists() for component in components)
    assert build["with"]["tags"] == "${{ env.IMAGE_PREFIX }}/${{ matrix.component }}:${{ needs.version.outputs.version }}"
    assert set(build["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    # The tag must be the version the chart's defaults point at.
    assert "helm/simiankube/Chart.yaml" in scripts and "pyproject.toml" in scripts and "helm package" in scripts
