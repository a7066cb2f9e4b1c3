"""The render step: deterministic, complete, and the same configuration everywhere."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.core.paths import EXAMPLES, ROOT, SPIGO

from simiankube import contract
from simiankube.contract import NanoserviceConfig
from simiankube.render import PodResources, RenderSettings, parse_resources, render
from simiankube.render.nanoconfig import NanoserviceConfigs, build_nanoservice_config
from simiankube.render.settings import quantity
from simiankube.model.spec import SpecError, load_file, parse_document
from simiankube.model.topology import expand

GOLDEN = Path(__file__).parent / "golden"


def rendered(path: Path, **settings: Any) -> list[dict[str, Any]]:
    return render(expand(load_file(path)), RenderSettings(**settings))


def configs(objects: list[dict[str, Any]]) -> dict[str, NanoserviceConfig]:
    return {
        o["metadata"]["name"]: NanoserviceConfig.from_json(o["data"][contract.CONFIG_KEY])
        for o in objects
        if o["kind"] == "ConfigMap"
    }


@pytest.mark.parametrize("name", ["lamp", "netflixoss"])
def test_golden(name: str) -> None:
    """Set UPDATE_GOLDEN=1 to rewrite after an intended change, then review the diff."""
    text = yaml.safe_dump_all(rendered(ROOT / "architectures" / f"{name}.yaml", namespace="demo"), sort_keys=False)
    golden = GOLDEN / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
        pytest.fail(f"rewrote {golden.name}: review the diff, then run again without UPDATE_GOLDEN")
    assert text == golden.read_text()


def test_clashing_object_names_are_spec_errors() -> None:
    """Services `db` and `db-peers` would both render the Service `<arch>-db-peers`."""
    arch = parse_document({
        "apiVersion": f"{contract.API_GROUP}/{contract.API_VERSION}", "kind": contract.KIND,
        "metadata": {"name": "shop"},
        "spec": {"arch": "shop", "services": [
            {"name": "db", "package": "store"},
            {"name": "web", "package": "karyon", "dependencies": ["db", "db-peers"]},
            {"name": "db-peers", "package": "store"},
        ]},
    })
    with pytest.raises(SpecError) as raised:
        render(expand(arch), RenderSettings())
    assert raised.value.problems == [
        'services[2].name: "db-peers" renders the Service "shop-db-peers", which "db" renders too; rename one of them'
    ]


def containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for o in objects if o["kind"] in ("Deployment", "StatefulSet") for c in o["spec"]["template"]["spec"]["containers"]]


def test_pod_resources_are_settings_and_default_to_small_requests() -> None:
    lamp = ROOT / "architectures" / "lamp.yaml"
    assert {json.dumps(c["resources"]) for c in containers(rendered(lamp))} == {json.dumps(
        {"requests": {"cpu": "10m", "memory": "40Mi"}, "limits": {"memory": "128Mi"}})}
    small = parse_resources({"requests": {"cpu": "2m"}, "limits": {"cpu": 1, "memory": "64Mi"}})
    assert [c["resources"] for c in containers(rendered(lamp, resources=small))][0] == {
        "requests": {"cpu": "2m"}, "limits": {"cpu": "1", "memory": "64Mi"}}
    assert {json.dumps(c["resources"]) for c in containers(rendered(lamp, resources=PodResources((), ())))} == {"{}"}


@pytest.mark.parametrize(("text", "amount"), [
    ("10m", "0.01"), ("2", "2"), ("0.5", "0.5"), (".5", "0.5"), ("64Mi", str(64 * 2**20)), ("1G", "1e9"),
    ("1e3", "1000"), ("+1k", "1000"), ("100n", "1e-7"),
])
def test_quantities_read_as_kubernetes_reads_them(text: str, amount: str) -> None:
    assert quantity(text) == Decimal(amount)


@pytest.mark.parametrize(("document", "complaint"), [
    ({"requests": {"cpu": "ten"}}, "resources.requests.cpu: 'ten' is not a Kubernetes quantity"),
    ({"requests": {"cpu": "-1"}}, "resources.requests.cpu: '-1' is not a Kubernetes quantity"),
    ({"requests": {"memory": "64MB"}}, "resources.requests.memory: '64MB' is not a Kubernetes quantity"),
    ({"requests": {"cpu": True}}, "resources.requests.cpu: True is not a Kubernetes quantity"),
    ({"requests": {"gpu": "1"}}, "resources.requests.gpu: unknown resource"),
    ({"request": {"cpu": "1"}}, "resources.request: unknown key"),
    ({"limits": ["cpu"]}, "resources.limits: expected a mapping"),
    ("2m", "resources: expected a mapping"),
    ({"requests": {"memory": "1Gi"}, "limits": {"memory": "128Mi"}}, "resources.requests.memory: '1Gi' is more than limits.memory '128Mi'"),
])
def test_bad_pod_resources_name_the_field_and_value(document: Any, complaint: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_resources(document)
    assert str(raised.value).startswith(complaint), raised.value


def test_render_is_deterministic_and_sorted() -> None:
    first = rendered(SPIGO / "riak_arch.json")
    assert first == rendered(SPIGO / "riak_arch.json")
    kinds = [o["kind"] for o in first]
    assert kinds == sorted(kinds, key=["NetworkPolicy", "ConfigMap", "Service", "StatefulSet", "Deployment"].index)


def test_workload_kinds_replicas_and_services() -> None:
    objects = rendered(SPIGO / "netflixoss_arch.json")
    workloads = {o["metadata"]["name"]: o for o in objects if o["kind"] in ("Deployment", "StatefulSet")}
    assert {name: (o["kind"], o["spec"]["replicas"]) for name, o in workloads.items()} == {
        "netflixoss-cass-subscriber-us-east-1": ("StatefulSet", 6),
        "netflixoss-evcache-subscriber-us-east-1": ("StatefulSet", 3),
        "netflixoss-subscriber-us-east-1": ("Deployment", 6),
        "netflixoss-login-us-east-1": ("Deployment", 18),
        "netflixoss-homepage-us-east-1": ("Deployment", 24),
        "netflixoss-wwwproxy-us-east-1": ("Deployment", 6),
        "netflixoss-www-elb-us-east-1": ("Deployment", 1),
        "netflixoss-www": ("Deployment", 1),
    }
    assert sum(o["spec"]["replicas"] for o in workloads.values()) == 65
    services = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "Service"}
    assert len(services) == 16
    cass = workloads["netflixoss-cass-subscriber-us-east-1"]
    assert services[cass["spec"]["serviceName"]]["clusterIP"] == "None"
    assert services["netflixoss-homepage-us-east-1"]["trafficDistribution"] == "PreferClose"
    for workload in workloads.values():
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        assert services[workload["metadata"]["name"]]["selector"] == selector


def test_labels_annotations_and_names() -> None:
    objects = rendered(SPIGO / "netflixoss_arch.json", namespace="sim")
    for o in objects:
        meta = o["metadata"]
        assert meta["namespace"] == "sim"
        assert len(meta["name"]) <= 63
        assert meta["labels"][contract.LABEL_ARCHITECTURE] == "netflixoss"
        assert meta["labels"][contract.LABEL_MANAGED_BY] == "simiankube"
        assert "ownerReferences" not in meta  # the operator owns ownership
    cass = next(o for o in objects if o["metadata"]["name"] == "netflixoss-cass-subscriber-us-east-1"
                and o["kind"] == "StatefulSet")
    labels = cass["spec"]["template"]["metadata"]["labels"]
    assert labels[contract.LABEL_SERVICE] == "cass-subscriber"
    assert labels[contract.LABEL_PACKAGE] == "priamCassandra"
    assert labels[contract.LABEL_REGION] == "us-east-1"
    assert labels["app.kubernetes.io/name"] == "cass-subscriber"
    assert labels["calls.simiankube.io/cass-subscriber"] == "true"
    assert cass["metadata"]["annotations"][contract.ANNOTATION_SPIGO_NAME] == "cassSubscriber"


def test_pods_meet_the_restricted_profile_and_fit_small_nodes() -> None:
    for o in rendered(SPIGO / "netflixoss_arch.json"):
        if o["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = o["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for volume in pod["volumes"]:  # restricted allows only these volume types
            assert set(volume) - {"name"} <= {"configMap", "emptyDir", "secret", "projected",
                                              "downwardAPI", "persistentVolumeClaim", "csi", "ephemeral"}
        container, = pod["containers"]
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["readOnlyRootFilesystem"] is True
        assert container["resources"]["requests"] == {"cpu": "10m", "memory": "40Mi"}
        assert container["readinessProbe"]["httpGet"]["path"] == contract.PATH_READY
        assert container["livenessProbe"]["httpGet"]["path"] == contract.PATH_HEALTH
        # A busy small node answers later than Kubernetes' default 1 s (migration step 9 at load 130).
        assert (container["readinessProbe"]["timeoutSeconds"], container["readinessProbe"]["failureThreshold"]) == (5, 3)
        assert (container["livenessProbe"]["timeoutSeconds"], container["livenessProbe"]["failureThreshold"]) == (5, 6)
        assert pod["topologySpreadConstraints"][0]["whenUnsatisfiable"] == "ScheduleAnyway"


def test_nanoservice_configuration() -> None:
    arch = load_file(SPIGO / "netflixoss_arch.json").with_scale(regions=2)
    objects = render(expand(arch), RenderSettings())
    by_name = configs(objects)
    assert len(by_name) == 15
    cass = by_name["netflixoss-cass-subscriber-us-east-1"]
    assert (cass.service, cass.package, cass.region, cass.registry) == (
        "cassSubscriber", "priamCassandra", "us-east-1", True)
    assert [p.host for p in cass.peers[:2]] == [
        "netflixoss-cass-subscriber-us-east-1-0.netflixoss-cass-subscriber-us-east-1-peers",
        "netflixoss-cass-subscriber-us-east-1-1.netflixoss-cass-subscriber-us-east-1-peers",
    ]
    assert [p.zone for p in cass.peers] == ["zoneA", "zoneB", "zoneC"] * 2
    self_dep, = cass.dependencies  # eureka is the registry, not a service here
    assert [t.region for t in self_dep.targets] == ["us-east-1", "us-west-2"]
    assert len(self_dep.targets[1].instances) == 6
    www = by_name["netflixoss-www"]
    assert www.traffic is not None and www.traffic.interval_ms == 10.0
    elb, = www.dependencies
    assert [(t.region, t.host) for t in elb.targets] == [
        ("us-east-1", "netflixoss-www-elb-us-east-1"), ("us-west-2", "netflixoss-www-elb-us-west-2")]
    subscriber = by_name["netflixoss-subscriber-us-west-2"]
    assert [(d.service, d.package) for d in subscriber.dependencies] == [
        ("cassSubscriber", "priamCassandra"), ("evcacheSubscriber", "store")]
    assert subscriber.traffic is None and subscriber.peers == ()
    # the pod template's hash follows the configuration, so a change rolls the pods
    homepage = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].startswith(
        "netflixoss-homepage-us-east-1"))
    assert len(homepage["spec"]["template"]["metadata"]["annotations"][contract.ANNOTATION_CONFIG_HASH]) == 16


def test_config_round_trips_through_json() -> None:
    for config in configs(rendered(SPIGO / "riak_arch.json")).values():
        assert NanoserviceConfig.from_json(config.to_json()) == config
        assert json.loads(config.to_json())["architecture"] == "riak"


@pytest.mark.parametrize("path", [SPIGO / "netflixoss_arch.json", SPIGO / "riak_arch.json", *EXAMPLES])
def test_each_dependency_encoded_once_gives_the_reference_json(path: Path) -> None:
    """render encodes a dependency once for all its callers (NanoserviceConfigs); the text must stay the one
    build_nanoservice_config(...).to_json() writes, own rings across two regions included."""
    topology = expand(load_file(path).with_scale(regions=2))
    encoder = NanoserviceConfigs(topology)
    for placement in topology.placements:
        reference = build_nanoservice_config(topology, placement).to_json()
        assert encoder.to_json(placement) == reference, placement.workload
        assert encoder.to_json(placement) == reference, f"{placement.workload}, encoded twice"


def test_every_example_renders() -> None:
    for path in EXAMPLES:
        objects = rendered(path)
        names = [(o["kind"], o["metadata"]["name"]) for o in objects]
        assert len(names) == len(set(names)), path
