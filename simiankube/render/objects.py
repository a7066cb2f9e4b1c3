"""Builders for the objects of one placement: ConfigMap, Services, workload."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from simiankube import contract
from simiankube.model.naming import bounded, kube_name
from simiankube.render.nanoconfig import peers_service_name
from simiankube.render.settings import RenderSettings
from simiankube.model.topology import Placement, Topology

Object = dict[str, Any]


def architecture_labels(topology: Topology) -> dict[str, str]:
    """Labels every object of an architecture carries; the operator prunes by them."""
    return {
        contract.LABEL_ARCHITECTURE: topology.architecture.resource_name,
        contract.LABEL_PART_OF: topology.architecture.resource_name,
        contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
    }


def selector_labels(topology: Topology, placement: Placement) -> dict[str, str]:
    """The stable subset that selects a placement's pods (never changes on update)."""
    return {
        contract.LABEL_ARCHITECTURE: topology.architecture.resource_name,
        contract.LABEL_SERVICE: placement.service.kube_name,
        contract.LABEL_REGION: placement.region,
    }


def placement_labels(topology: Topology, placement: Placement) -> dict[str, str]:
    return {
        **architecture_labels(topology),
        **selector_labels(topology, placement),
        contract.LABEL_NAME: placement.service.kube_name,
        contract.LABEL_INSTANCE: placement.workload,
        contract.LABEL_COMPONENT: kube_name(placement.service.package),
        contract.LABEL_PACKAGE: placement.service.package,
    }


def calls_label(service_kube_name: str) -> str:
    """The pod label that says "this pod may call <service>" (see NetworkPolicies)."""
    return f"{contract.LABEL_CALLS_PREFIX}{bounded(service_kube_name, 63)}"


def pod_labels(topology: Topology, placement: Placement, labels: dict[str, str]) -> dict[str, str]:
    """`labels` (the placement's, not changed) and what the pods say about their zone and callees."""
    arch = topology.architecture
    pod = dict(labels)
    if placement.cross_zone:
        pod[contract.LABEL_ZONE] = contract.ANY_ZONE
    for dep in arch.callees(placement.service.name):
        pod[calls_label(arch.service(dep).kube_name)] = "true"
    return pod


@dataclass(frozen=True)
class Labels:
    """A placement's label sets, computed once and copied into each object (a shared dict would become a
    YAML anchor, and one object's edit would change the others)."""

    placement: dict[str, str]
    selector: dict[str, str]

    @classmethod
    def of(cls, topology: Topology, placement: Placement) -> Labels:
        return cls(placement_labels(topology, placement), selector_labels(topology, placement))


def _metadata(name: str, placement: Placement, labels: Labels, settings: RenderSettings) -> Object:
    return {
        "name": name,
        "namespace": settings.namespace,
        "labels": dict(labels.placement),
        "annotations": {contract.ANNOTATION_SPIGO_NAME: placement.service.name},
    }


def build_placement_objects(topology: Topology, placement: Placement, config_json: str,
                            settings: RenderSettings) -> list[Object]:
    """ConfigMap, Services and workload of one placement."""
    labels = Labels.of(topology, placement)
    return [
        build_config_map(placement, labels, config_json, settings),
        *build_services(placement, labels, settings),
        build_workload(topology, placement, labels, config_json, settings),
    ]


def build_config_map(placement: Placement, labels: Labels, config_json: str, settings: RenderSettings) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(placement.workload, placement, labels, settings),
        "data": {contract.CONFIG_KEY: config_json},
    }


def build_services(placement: Placement, labels: Labels, settings: RenderSettings) -> list[Object]:
    """A Service that reaches any ready instance, zone-first, and a headless one per instance."""
    port = {"name": contract.HTTP_PORT_NAME, "port": contract.HTTP_PORT, "targetPort": contract.HTTP_PORT_NAME,
            "protocol": "TCP"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(placement.workload, placement, labels, settings),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(labels.selector),
            "ports": [port],
            "trafficDistribution": "PreferClose",
        },
    }
    peers = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(peers_service_name(placement.workload), placement, labels, settings),
        "spec": {
            "clusterIP": "None",
            "selector": dict(labels.selector),
            "ports": [port],
            "publishNotReadyAddresses": False,
        },
    }
    return [service, peers]


def config_hash(config_json: str) -> str:
    return hashlib.sha256(config_json.encode()).hexdigest()[:16]


STARTUP_SECONDS = 300  # the most a pod may take to answer /healthz before it is restarted
PRESTOP_SECONDS = 3  # + the nanoservice's 1 s drain + 10 s for work in flight <= terminationGracePeriodSeconds
# Kubernetes' default probe timeout is 1 s. On a 2-core node starting 160 pods (migration step 9, load 130-155)
# answers took longer: liveness killed busy pods, their restarts added load, and the only CoreDNS was killed too.
# A crashed process still fails at once (connection refused); only a slow answer gets the longer grace.
PROBE_TIMEOUT_SECONDS = 5


def build_pod_template(topology: Topology, placement: Placement, labels: Labels, config_json: str,
                       settings: RenderSettings) -> Object:
    probe_port = contract.HTTP_PORT_NAME
    container = {
        "name": "nanoservice",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "env": [
            {"name": contract.ENV_CONFIG, "value": contract.CONFIG_PATH},
            {"name": contract.ENV_INSTANCE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": contract.ENV_POD_IP, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        "ports": [{"name": contract.HTTP_PORT_NAME, "containerPort": contract.HTTP_PORT, "protocol": "TCP"}],
        # Three misses in a row (15 s) before a pod leaves its Services: on a node busy starting 100+ pods a
        # single /readyz can miss even 5 s, and every flap holds the Architecture back from Ready.
        "readinessProbe": {"httpGet": {"path": contract.PATH_READY, "port": probe_port}, "periodSeconds": 5,
                           "timeoutSeconds": PROBE_TIMEOUT_SECONDS, "failureThreshold": 3},
        # A hung process is restarted after a minute of unanswered /healthz.
        "livenessProbe": {"httpGet": {"path": contract.PATH_HEALTH, "port": probe_port}, "periodSeconds": 10,
                          "timeoutSeconds": PROBE_TIMEOUT_SECONDS, "failureThreshold": 6},
        # Liveness starts once /healthz first answers: on a crowded node a Python process can take
        # longer than liveness's minute to listen, and killing it then only adds load (a crash loop).
        "startupProbe": {"httpGet": {"path": contract.PATH_HEALTH, "port": probe_port}, "periodSeconds": 2,
                         "timeoutSeconds": 2, "failureThreshold": STARTUP_SECONDS // 2},
        # Serve on while the endpoint removal reaches every client, then SIGTERM (the nanoservice drains).
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
        "resources": settings.resources.as_kubernetes(),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": contract.CONFIG_DIR, "readOnly": True},
            {"name": "scratch", "mountPath": contract.SCRATCH_DIR},
        ],
    }
    return {
        "metadata": {
            "labels": pod_labels(topology, placement, labels.placement),
            "annotations": {
                contract.ANNOTATION_SPIGO_NAME: placement.service.name,
                contract.ANNOTATION_CONFIG_HASH: config_hash(config_json),
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(contract.HTTP_PORT),
                "prometheus.io/path": contract.PATH_METRICS,
            },
        },
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": settings.termination_grace_seconds,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "fsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    # Spread where zones exist, still schedule on a one-node kind cluster.
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": dict(labels.selector)},
                }
            ],
            "containers": [container],
            "volumes": [
                {"name": "config", "configMap": {"name": placement.workload}},
                {"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}},
            ],
        },
    }


# A config change (a step that adds a region changes every dependent's targets) rolls a ring's pods
# this many at a time (KEP-961, beta and on since Kubernetes 1.35; Kubernetes rounds down, at least
# 1). Not the Deployments' 25%: that is 1 of a ring of 6, so it restarted one pod at a time, each
# waiting for Ready (step 9 of the migration: 6 in a row, minutes on a busy node). Half a ring keeps
# serving its callers; a nanoservice instance holds no data that a wider roll could lose.
STATEFUL_MAX_UNAVAILABLE = "50%"


def build_workload(topology: Topology, placement: Placement, labels: Labels, config_json: str,
                   settings: RenderSettings) -> Object:
    """A StatefulSet where instances need identities (rings, replicas), else a Deployment."""
    spec: Object = {
        "replicas": placement.replicas,
        "selector": {"matchLabels": dict(labels.selector)},
        "template": build_pod_template(topology, placement, labels, config_json, settings),
    }
    if placement.service.stateful:
        kind = "StatefulSet"
        spec["serviceName"] = peers_service_name(placement.workload)
        spec["podManagementPolicy"] = "Parallel"
        spec["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": STATEFUL_MAX_UNAVAILABLE}}
    else:
        kind = "Deployment"
        spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": _metadata(placement.workload, placement, labels, settings),
        "spec": spec,
    }
