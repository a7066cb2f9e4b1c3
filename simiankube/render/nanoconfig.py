"""The nanoservice configuration of one placement (service x region)."""

from __future__ import annotations

from dataclasses import replace

from simiankube import contract
from simiankube.contract import Dependency, Instance, NanoserviceConfig, Target, Traffic, to_json
from simiankube.model.spec import REGISTRY, TRAFFIC_SOURCE_PACKAGES
from simiankube.model.topology import Placement, Topology


def peers_service_name(workload: str) -> str:
    """The headless Service that resolves to every ready instance of a workload."""
    return f"{workload}-peers"


def instance_host(placement: Placement, ordinal: int) -> str:
    """A StatefulSet pod's stable DNS name, relative to its namespace."""
    return f"{placement.workload}-{ordinal}.{peers_service_name(placement.workload)}"


def addressable_instances(placement: Placement) -> tuple[Instance, ...]:
    """Instances with stable names: StatefulSet pods only (Deployments have none)."""
    if not placement.service.stateful:
        return ()
    return tuple(Instance(name=i.name, host=instance_host(placement, i.ordinal), zone=i.zone) for i in placement.instances)


def build_target(placement: Placement, *, with_instances: bool) -> Target:
    """`with_instances`: name every instance (a ring reaching its own members in other regions); callers of
    other services pick among ready instances through `peers_host` and need no names."""
    return Target(
        region=placement.region,
        host=placement.workload,
        peers_host=peers_service_name(placement.workload),
        port=contract.HTTP_PORT,
        instances=addressable_instances(placement) if with_instances else (),
    )


KEEP_WARM_SECONDS = 5.0  # an idle edge gets a call at least this often (when the architecture self-drives)


def build_traffic(topology: Topology, placement: Placement) -> Traffic | None:
    """What a service that starts traces sends, per instance. A traffic source sends the architecture's
    traffic from each instance, as spigo's denominator does. A self-driven service (`Architecture.self_driven`:
    one no traffic source reaches) starts traces at the architecture's rate as a whole, spread over all its
    instances in every region: each instance ticks every `interval_ms` x instance count. Anything else
    starts none."""
    arch = topology.architecture
    service = placement.service
    if service.package in TRAFFIC_SOURCE_PACKAGES:
        return arch.traffic
    if service.name not in arch.self_driven:
        return None
    instances = sum(p.replicas for p in topology.placements_of(service.name))
    return replace(arch.traffic, interval_ms=arch.traffic.interval_ms * instances)


def build_dependency(topology: Topology, name: str, *, own: bool) -> Dependency:
    """`own`: the service's own ring, whose instances it names (see build_target)."""
    return Dependency(
        service=name,
        package=topology.architecture.service(name).package,
        targets=tuple(build_target(p, with_instances=own) for p in topology.placements_of(name)),
    )


def build_nanoservice_config(topology: Topology, placement: Placement,
                             dependencies: tuple[Dependency, ...] | None = None) -> NanoserviceConfig:
    """Every region of every dependency is listed; the nanoservice prefers its own. Instance names are
    listed only for the service's own (ring) dependency: a config stays the size of its edges, not of the
    instances behind them. `dependencies` replaces the list (NanoserviceConfigs encodes it apart)."""
    arch = topology.architecture
    service = placement.service
    callees = arch.callees(service.name)
    if dependencies is None:
        dependencies = tuple(build_dependency(topology, dep, own=dep == service.name) for dep in callees)
    return NanoserviceConfig(
        architecture=arch.resource_name,
        service=service.name,
        package=service.package,
        region=placement.region,
        behavior=service.behavior,
        dependencies=dependencies,
        traffic=build_traffic(topology, placement),
        peers=addressable_instances(placement),
        registry=REGISTRY in service.dependencies,
        deadline_ms=arch.traffic.deadline_ms,
        max_hops=arch.traffic.max_hops,
        callers=topology.callers_of(service.name),
        keep_warm_s=KEEP_WARM_SECONDS if arch.self_driving and callees else 0.0,
    )


# What a configuration without dependencies holds in its JSON. Only a key can be followed by `":`: within a
# JSON string every quote is escaped, and a string value is followed by `,`, `]` or `}`.
_NO_DEPENDENCIES = '"dependencies":[]'


class NanoserviceConfigs:
    """The JSON configurations of one render, byte for byte `build_nanoservice_config(...).to_json()`.

    A dependency's entry is the same in the configuration of each of its callers (but its own, which names
    the ring's instances): it is built and encoded once per render instead of once per caller, which was
    half of a 10,000-service render. Lives for one render: the memo holds that topology's entries only.
    """

    def __init__(self, topology: Topology) -> None:
        self._topology = topology
        self._encoded: dict[str, str] = {}

    def _dependency_json(self, name: str, *, own: bool) -> str:
        if own:
            return to_json(build_dependency(self._topology, name, own=True))
        encoded = self._encoded.get(name)
        if encoded is None:
            encoded = self._encoded[name] = to_json(build_dependency(self._topology, name, own=False))
        return encoded

    def to_json(self, placement: Placement) -> str:
        service = placement.service
        arch = self._topology.architecture
        dependencies = ",".join(
            self._dependency_json(dep, own=dep == service.name) for dep in arch.callees(service.name)
        )
        text = build_nanoservice_config(self._topology, placement, dependencies=()).to_json()
        return text.replace(_NO_DEPENDENCIES, f'"dependencies":[{dependencies}]', 1)
