"""NetworkPolicies from the dependency graph: one per service, plus three shared.

- `<arch>.default-deny` isolates every pod of the architecture, both ways.
- `<arch>.allow-dns` lets them resolve names (UDP and TCP 53 to kube-dns).
- `<arch>.allow-metrics` admits `segmentation.metricsFrom` on the http port.
- `<arch>-<service>` (one per service, all its regions) admits its callers and
  lets it reach its dependencies, on the http port only. Callers are selected
  by the `calls.simiankube.io/<service>` pod label in ONE peer, and
  dependencies by one `In` expression, so the size of a policy does not grow
  rule by rule with the number of edges, and the number of policies is
  services + 3. Entry services (traffic sources and services nobody depends
  on) also admit `segmentation.clientsFrom`.

The `.` in the shared names cannot occur in a service's Kubernetes name, so a
service called `default-deny` cannot collide with them.
`segmentation.mode: allow-all` renders none, for comparison runs.
"""

from __future__ import annotations

from typing import Any

from simiankube import contract
from simiankube.model.naming import bounded
from simiankube.render.objects import architecture_labels, calls_label
from simiankube.render.settings import RenderSettings
from simiankube.model.spec import TRAFFIC_SOURCE_PACKAGES, Service
from simiankube.model.topology import Topology

Object = dict[str, Any]

KUBE_SYSTEM = "kube-system"
KUBE_DNS_LABELS = {"k8s-app": "kube-dns"}
DNS_PORT = 53
MAX_NAME = 253  # NetworkPolicy names are DNS subdomains


def _http_ports() -> list[Object]:
    """Fresh objects every time: shared ones would turn into YAML anchors."""
    return [{"protocol": "TCP", "port": contract.HTTP_PORT_NAME}]


def _peers(peers: tuple[Object, ...]) -> list[Object]:
    """A fresh copy (see _http_ports) of plain label selectors; copy.deepcopy costs ten times more."""
    return [_fresh(peer) for peer in peers]


def _fresh(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_fresh(v) for v in value]
    return value


def _policy(name: str, topology: Topology, settings: RenderSettings, spec: Object, **labels: str) -> Object:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": bounded(name, MAX_NAME),
            "namespace": settings.namespace,
            "labels": {**architecture_labels(topology), **labels},
        },
        "spec": spec,
    }


def _architecture_pods(topology: Topology) -> Object:
    return {"matchLabels": {contract.LABEL_ARCHITECTURE: topology.architecture.resource_name}}


def build_default_deny(topology: Topology, settings: RenderSettings) -> Object:
    spec = {"podSelector": _architecture_pods(topology), "policyTypes": ["Ingress", "Egress"]}
    return _policy(f"{topology.architecture.resource_name}.default-deny", topology, settings, spec)


def build_dns_egress(topology: Topology, settings: RenderSettings) -> Object:
    spec = {
        "podSelector": _architecture_pods(topology),
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [
                    {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": KUBE_SYSTEM}},
                        "podSelector": {"matchLabels": dict(KUBE_DNS_LABELS)},
                    }
                ],
                "ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}],
            }
        ],
    }
    return _policy(f"{topology.architecture.resource_name}.allow-dns", topology, settings, spec)


def build_metrics_ingress(topology: Topology, settings: RenderSettings) -> Object:
    peers = _peers(topology.architecture.segmentation.metrics_from)
    spec = {
        "podSelector": _architecture_pods(topology),
        "policyTypes": ["Ingress"],
        "ingress": [{"from": peers, "ports": _http_ports()}] if peers else [],
    }
    return _policy(f"{topology.architecture.resource_name}.allow-metrics", topology, settings, spec)


def called_services(topology: Topology) -> frozenset[str]:
    """Services some other service (or itself) depends on."""
    return frozenset(dep for s in topology.architecture.services for dep in s.dependencies)


def entry_services(topology: Topology) -> tuple[Service, ...]:
    """Where traffic enters: traffic sources, and services nobody depends on."""
    called = called_services(topology)
    return tuple(
        s for s in topology.architecture.services if s.package in TRAFFIC_SOURCE_PACKAGES or s.name not in called
    )


def build_service_policy(
    topology: Topology, service: Service, entry: bool, has_callers: bool, settings: RenderSettings
) -> Object:
    arch = topology.architecture
    dependencies = sorted({arch.service(d).kube_name for d in arch.callees(service.name)})
    ingress = []
    if has_callers:
        callers = {contract.LABEL_ARCHITECTURE: arch.resource_name, calls_label(service.kube_name): "true"}
        ingress.append({"from": [{"podSelector": {"matchLabels": callers}}], "ports": _http_ports()})
    if entry and arch.segmentation.clients_from:
        ingress.append({"from": _peers(arch.segmentation.clients_from), "ports": _http_ports()})
    spec: Object = {
        "podSelector": {
            "matchLabels": {contract.LABEL_ARCHITECTURE: arch.resource_name, contract.LABEL_SERVICE: service.kube_name}
        },
        "policyTypes": ["Ingress", "Egress"] if dependencies else ["Ingress"],
        "ingress": ingress,
    }
    if dependencies:
        to = {
            "matchLabels": {contract.LABEL_ARCHITECTURE: arch.resource_name},
            "matchExpressions": [{"key": contract.LABEL_SERVICE, "operator": "In", "values": dependencies}],
        }
        spec["egress"] = [{"to": [{"podSelector": to}], "ports": _http_ports()}]
    name = f"{arch.resource_name}-{service.kube_name}"
    return _policy(name, topology, settings, spec, **{contract.LABEL_SERVICE: service.kube_name})


def build_network_policies(topology: Topology, settings: RenderSettings) -> list[Object]:
    """Every NetworkPolicy of an architecture; none in `allow-all` mode."""
    if topology.architecture.segmentation.mode == "allow-all":
        return []
    entries = {s.name for s in entry_services(topology)}
    called = called_services(topology)
    return [
        build_default_deny(topology, settings),
        build_dns_egress(topology, settings),
        build_metrics_ingress(topology, settings),
        *(
            build_service_policy(topology, s, s.name in entries, s.name in called, settings)
            for s in topology.architecture.services
        ),
    ]
