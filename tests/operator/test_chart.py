"""The Helm chart: lint, render in both RBAC modes, least privilege, restricted pods, bad values refused.

These need only helm (the rig's, else one on PATH), not the control plane, so
they run in the quick loop; without any helm they are skipped, saying why.
"""

from __future__ import annotations

from importlib import resources
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from simiankube.cli import build_parser
from simiankube.render.settings import PodResources, RenderSettings, parse_resources
from tests.e2e.support import NANOSERVICE_CPU_REQUEST

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "simiankube"


def run_helm(helm_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_bin), *args], capture_output=True, text=True, timeout=120)


def helm(helm_bin: Path, *args: str) -> str:
    result = run_helm(helm_bin, *args)
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def template(helm_bin: Path, *values: str) -> list[dict[str, Any]]:
    sets = [arg for value in values for arg in ("--set", value)]
    out = helm(helm_bin, "template", "sk", str(CHART), "--namespace", "simiankube-system", "--include-crds", *sets)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Objects of one kind, the leader election's Role and RoleBinding aside (see their own test)."""
    return [d for d in docs if d["kind"] == kind and not d["metadata"]["name"].endswith("-leader")]


def test_chart_crd_is_the_crd() -> None:
    assert (CHART / "crds" / "architecture.yaml").read_text() == (REPO / "crds" / "architecture.yaml").read_text()


def test_the_package_ships_the_crd() -> None:
    """pyproject's package data: `kubectl apply` works from an installed wheel too."""
    packaged = resources.files("simiankube.operator").joinpath("crd.yaml").read_text()
    assert packaged == (REPO / "crds" / "architecture.yaml").read_text()


def test_helm_lint(helm_bin: Path) -> None:
    helm(helm_bin, "lint", "--strict", str(CHART))
    helm(helm_bin, "lint", "--strict", str(CHART), "--set", "watchNamespaces={a,b}")


def test_cluster_wide_by_default(helm_bin: Path) -> None:
    docs = template(helm_bin)
    assert [d["metadata"]["name"] for d in by_kind(docs, "CustomResourceDefinition")] == ["architectures.simiankube.io"]
    assert len(by_kind(docs, "ClusterRole")) == 1 and len(by_kind(docs, "ClusterRoleBinding")) == 1
    assert not by_kind(docs, "Role")
    (deployment,) = by_kind(docs, "Deployment")
    assert "--all-namespaces" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_namespaced_rbac_when_namespaces_are_listed(helm_bin: Path) -> None:
    docs = template(helm_bin, "watchNamespaces={team-a,team-b}")
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


def granted(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    return {(group, resource): set(rule["verbs"]) for rule in role["rules"]
            for group in rule["apiGroups"] for resource in rule["resources"]}


# Exactly what the operator calls (see docs/operator.md, "RBAC"): nothing more.
RULES = {
    ("simiankube.io", "architectures"): {"get", "list", "watch", "patch"},
    ("simiankube.io", "architectures/status"): {"patch"},
    ("simiankube.io", "architectures/finalizers"): {"update"},
    ("", "configmaps"): {"list", "watch", "create", "patch", "delete"},
    ("", "services"): {"list", "watch", "create", "patch", "delete"},
    ("apps", "deployments"): {"list", "watch", "create", "patch", "delete"},
    ("apps", "statefulsets"): {"list", "watch", "create", "patch", "delete"},
    ("networking.k8s.io", "networkpolicies"): {"list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"list"},
    ("", "pods/eviction"): {"create"},
    ("apps", "replicasets"): {"get"},
    ("", "events"): {"create"},
}
VERIFICATION = {("", "pods/proxy"): {"create"}}


def test_rbac_is_exactly_what_the_operator_calls(helm_bin: Path) -> None:
    (role,) = by_kind(template(helm_bin), "ClusterRole")
    assert granted(role) == {**RULES, **VERIFICATION, ("", "namespaces"): {"list"}}
    for namespaced in by_kind(template(helm_bin, "watchNamespaces={a}"), "Role"):
        assert granted(namespaced) == {**RULES, **VERIFICATION}


def test_pod_proxy_only_when_verification_is_enabled(helm_bin: Path) -> None:
    docs = template(helm_bin, "verification.enabled=false")
    (role,) = by_kind(docs, "ClusterRole")
    assert granted(role) == RULES
    (deployment,) = by_kind(docs, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--no-verification" in args
    assert build_parser().parse_args(["operator", *args]).verification is False


def test_names_pull_secrets_and_pod_annotations(helm_bin: Path) -> None:
    docs = template(helm_bin, "fullnameOverride=ops", "imagePullSecrets[0].name=regcred", "podAnnotations.team=sre")
    assert {d["metadata"]["name"] for d in docs if d["kind"] != "CustomResourceDefinition"} == {
        "ops", "ops-metrics", "ops-leader"}
    (deployment,) = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["metadata"]["annotations"]["team"] == "sre"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["spec"]["serviceAccountName"] == "ops"
    (deployment,) = by_kind(template(helm_bin, "nameOverride=chaos"), "Deployment")
    assert deployment["metadata"]["name"] == "sk-chaos"
    assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "chaos-operator"


def test_replicas_elect_a_leader_over_a_lease(helm_bin: Path) -> None:
    docs = template(helm_bin, "replicaCount=2")
    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2 and deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--leader-election=$(POD_NAMESPACE)/sk-simiankube" in args
    assert build_parser().parse_args(["operator", *args]).leader_election == ("$(POD_NAMESPACE)", "sk-simiankube")
    (role,) = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "sk-simiankube-leader"]
    assert role["metadata"]["namespace"] == "simiankube-system"
    assert granted(role) == {("coordination.k8s.io", "leases"): {"get", "create", "update"}}
    (single,) = by_kind(template(helm_bin), "Deployment")
    assert single["spec"]["replicas"] == 1 and single["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize(("value", "complaint"), [
    ("chaos.mode=sometimes", "/chaos/mode"),
    ("applyConcurrency=0", "/applyConcurrency"),
    ("watchNamespaces={Team_A}", "/watchNamespaces/0"),
    ("verification.enabled=maybe", "/verification/enabled"),
    ("metrics.port=70000", "/metrics/port"),
    ("chaos.mod=off", "mod"),
    ("replicaCount=0", "/replicaCount"),
    ("replicas=2", "replicas"),
    ("nanoservice.resources.requests.cpu=ten", "/nanoservice/resources/requests/cpu"),
    ("nanoservice.resources.limits.memory=-1", "/nanoservice/resources/limits/memory"),
    ("nanoservice.resources.requests.gpu=1", "gpu"),
])
def test_bad_values_fail_at_install(helm_bin: Path, value: str, complaint: str) -> None:
    result = run_helm(helm_bin, "template", "sk", str(CHART), "--set", value)
    assert result.returncode != 0, result.stdout[:200]
    assert complaint in result.stderr


def test_operator_pod_meets_pod_security_restricted(helm_bin: Path) -> None:
    (deployment,) = by_kind(template(helm_bin), "Deployment")
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
def test_operator_args_are_accepted_by_the_cli(helm_bin: Path, values: tuple[str, ...]) -> None:
    (deployment,) = by_kind(template(helm_bin, *values), "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    parsed = build_parser().parse_args(["operator", *args])
    assert parsed.nanoservice_image == "ghcr.io/simiankube/nanoservice:0.1.0" == RenderSettings.image
    assert parsed.liveness == "http://0.0.0.0:8080/healthz"
    assert parsed.nanoservice_resources == PodResources()  # the chart's defaults are the render's


def operator_args(helm_bin: Path, *values: str) -> list[str]:
    (deployment,) = by_kind(template(helm_bin, *values), "Deployment")
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])


def test_nanoservice_resources_reach_the_operator(helm_bin: Path) -> None:
    args = operator_args(helm_bin, "nanoservice.resources.requests.cpu=2m", "nanoservice.resources.limits.cpu=1",
                         "nanoservice.resources.limits.memory=null")
    assert build_parser().parse_args(["operator", *args]).nanoservice_resources == parse_resources(
        {"requests": {"cpu": "2m", "memory": "40Mi"}, "limits": {"cpu": "1"}})


@pytest.mark.parametrize(("flag", "complaint"), [
    ('{"requests": {"cpu": "lots"}}', "resources.requests.cpu: 'lots' is not a Kubernetes quantity"),
    ('{"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}', "resources.requests.cpu: '2' is more than limits.cpu '1'"),
    ("cpu=2m", "not JSON"),
])
def test_bad_nanoservice_resources_stop_the_operator_naming_the_value(
        flag: str, complaint: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["operator", f"--nanoservice-resources={flag}"])
    assert exited.value.code == 2
    assert f"--nanoservice-resources: {complaint}" in capsys.readouterr().err
    monkeypatch.setenv("SIMIANKUBE_NANOSERVICE_RESOURCES", flag)  # the same check for the environment
    with pytest.raises(SystemExit):
        build_parser().parse_args(["operator"])
    assert complaint in capsys.readouterr().err


def chart_defaults() -> tuple[str, dict[str, Any]]:
    """The chart's appVersion and its values."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return str(chart["appVersion"]), yaml.safe_load((CHART / "values.yaml").read_text())


def test_default_images_are_the_released_ones_at_the_app_version(helm_bin: Path) -> None:
    app_version, _ = chart_defaults()
    assert app_version == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    (container,) = by_kind(template(helm_bin), "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/simiankube/operator:{app_version}"
    assert f"--nanoservice-image=ghcr.io/simiankube/nanoservice:{app_version}" in container["args"]
    (container,) = by_kind(template(helm_bin, "image.tag=dev", "nanoservice.image.repository=local/nano",
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
    # The same pod CPU request as the real-node tests: the migration's step 9 fits a small node.
    assert f"nanoservice.resources.requests.cpu={NANOSERVICE_CPU_REQUEST}" in scripts
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
