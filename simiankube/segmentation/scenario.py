"""What the rendered NetworkPolicies of an architecture should allow, with no cluster.

Feeds the reachability model with the rendered objects (pods synthesised
from the workloads, one per replica, named like the topology's instances)
and with the pods the policies talk about outside the architecture: a
kube-dns pod, a client matching `segmentation.clientsFrom` and a scraper
matching `segmentation.metricsFrom`. `simiankube policy explain`, the local
runner (`expected_service_matrix`) and the tests all use this.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from simiankube import contract
from simiankube.segmentation.reachability import NAMESPACE_NAME_LABEL, ContainerPort, Matrix, Model, Namespace, Pod, Target
from simiankube.render import RenderSettings, render
from simiankube.render.networkpolicies import DNS_PORT, KUBE_DNS_LABELS, KUBE_SYSTEM
from simiankube.model.spec import Architecture
from simiankube.model.topology import Topology, expand

WORKLOAD_KINDS = ("Deployment", "StatefulSet")
POD_NETWORK = ipaddress.ip_network("10.244.0.0/16")  # kind's default pod CIDR, for synthetic IPs
CLIENTS = "clients"
METRICS = "metrics"
DNS_TARGETS = (("kube-dns:53/UDP", "UDP"), ("kube-dns:53/TCP", "TCP"))


def pods_from_objects(objects: Sequence[Mapping[str, Any]]) -> list[Pod]:
    """One pod per replica of every rendered workload, with synthetic IPs."""
    pods = []
    hosts = POD_NETWORK.hosts()
    for obj in objects:
        if obj["kind"] not in WORKLOAD_KINDS:
            continue
        template = obj["spec"]["template"]
        ports = tuple(
            ContainerPort(port=p["containerPort"], protocol=p.get("protocol", "TCP"), name=p.get("name", ""))
            for container in template["spec"]["containers"]
            for p in container.get("ports", ())
        )
        for ordinal in range(obj["spec"]["replicas"]):
            pods.append(
                Pod(
                    namespace=obj["metadata"]["namespace"],
                    name=f"{obj['metadata']['name']}-{ordinal}",
                    labels=dict(template["metadata"]["labels"]),
                    ip=str(next(hosts)),
                    ports=ports,
                )
            )
    return pods


def _satisfying_labels(selector: Mapping[str, Any] | None) -> dict[str, str]:
    """Labels that a LabelSelector matches (In takes its first value; NotIn/DoesNotExist stay absent)."""
    labels = dict((selector or {}).get("matchLabels") or {})
    for expression in (selector or {}).get("matchExpressions") or ():
        if expression["operator"] == "In":
            labels[expression["key"]] = expression["values"][0]
        elif expression["operator"] == "Exists":
            labels[expression["key"]] = "true"
    return labels


def pod_for_peer(peer: Mapping[str, Any], policy_namespace: str, name: str) -> tuple[Pod, Namespace]:
    """A pod (and its namespace) that the NetworkPolicyPeer `peer` admits."""
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        excepted = [ipaddress.ip_network(e, strict=False) for e in block.get("except") or ()]
        network = ipaddress.ip_network(block["cidr"], strict=False)
        ip = next(
            (a for a in (network.network_address + i for i in range(min(network.num_addresses, 4096)))
             if not any(a in e for e in excepted)),
            network.network_address,
        )
        return Pod(namespace=f"{name}-external", name=name, ip=str(ip)), Namespace(f"{name}-external")
    if "namespaceSelector" in peer:
        labels = _satisfying_labels(peer["namespaceSelector"])
        namespace = Namespace(labels.get(NAMESPACE_NAME_LABEL, name), labels)
    else:
        namespace = Namespace(policy_namespace)
    pod = Pod(namespace=namespace.name, name=name, labels=_satisfying_labels(peer.get("podSelector")))
    return pod, namespace


@dataclass(frozen=True)
class Scenario:
    """Everything the model needs about one rendered architecture, and how to group it."""

    architecture: Architecture
    namespace: str
    pods: tuple[Pod, ...]  # the architecture's own
    extras: tuple[tuple[str, Pod], ...]  # (row name, pod): clients and metrics scrapers
    dns: Pod
    namespaces: tuple[Namespace, ...]
    policies: tuple[Mapping[str, Any], ...]

    def model(self) -> Model:
        everyone = (*self.pods, *(pod for _, pod in self.extras), self.dns)
        return Model(everyone, self.namespaces, self.policies)

    def matrix(self, model: Model, by_pod: bool = False) -> Matrix:
        """Rows: services (or pods), clients, metrics; columns: services (or pods) and kube-dns."""
        def group(pod: Pod) -> str:
            return pod.name if by_pod else pod.labels[contract.LABEL_SERVICE]

        sources = [(group(p), p) for p in self.pods] + list(self.extras)
        targets = [(group(p), Target(p, contract.HTTP_PORT)) for p in self.pods]
        targets += [(name, Target(self.dns, DNS_PORT, protocol)) for name, protocol in DNS_TARGETS]
        return model.matrix(sources, targets)


def scenario(topology: Topology, settings: RenderSettings = RenderSettings()) -> Scenario:
    objects = render(topology, settings)
    segmentation = topology.architecture.segmentation
    namespaces = {settings.namespace: Namespace(settings.namespace), KUBE_SYSTEM: Namespace(KUBE_SYSTEM)}
    extras = []
    for row, peers in ((CLIENTS, segmentation.clients_from), (METRICS, segmentation.metrics_from)):
        if peers:
            pod, namespace = pod_for_peer(peers[0], settings.namespace, row)
            extras.append((row, pod))
            namespaces.setdefault(namespace.name, namespace)
    dns = Pod(
        namespace=KUBE_SYSTEM,
        name="kube-dns",
        labels=dict(KUBE_DNS_LABELS),
        ip="10.96.0.10",
        ports=(ContainerPort(DNS_PORT, "UDP", "dns"), ContainerPort(DNS_PORT, "TCP", "dns-tcp")),
    )
    order = {s.kube_name: i for i, s in enumerate(topology.architecture.services)}
    pods = sorted(pods_from_objects(objects), key=lambda p: (order[p.labels[contract.LABEL_SERVICE]], p.name))
    return Scenario(
        architecture=topology.architecture,
        namespace=settings.namespace,
        pods=tuple(pods),
        extras=tuple(extras),
        dns=dns,
        namespaces=tuple(namespaces.values()),
        policies=tuple(o for o in objects if o["kind"] == "NetworkPolicy"),
    )


def expected_service_matrix(arch: Architecture | Topology, settings: RenderSettings = RenderSettings(), *,
                            spigo_names: bool = False) -> str:
    """The service-level truth table the rendered policies should produce, as text (for `simiankube run`);
    `spigo_names` labels services as the architecture names them (as the run's table does), not by their
    Kubernetes names."""
    topology = arch if isinstance(arch, Topology) else expand(arch)
    case = scenario(topology, settings)
    matrix = case.matrix(case.model())
    if spigo_names:
        matrix = matrix.relabeled({s.kube_name: s.name for s in topology.architecture.services})
    return matrix.text()


def explain_json(case: Scenario, matrix: Matrix) -> dict[str, Any]:
    return {
        "architecture": case.architecture.resource_name,
        "namespace": case.namespace,
        "mode": case.architecture.segmentation.mode,
        "policies": len(case.policies),
        "services": [s.kube_name for s in case.architecture.services],
        "sources": list(matrix.rows),
        "destinations": list(matrix.columns),
        "allowed": [list(pair) for pair in matrix.pairs()],
    }
