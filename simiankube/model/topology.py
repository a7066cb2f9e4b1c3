"""Topology: expand an architecture into regions, zones and instances.

spigo's rules, with its defects fixed: `regions: 0` is one global instance;
`count: 0` is one cross-zone instance per region; otherwise `count` instances
per region spread over three zones by index; scaling never turns a counted
service into a singleton (the scaled count floors at 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from simiankube import contract
from simiankube.model.naming import bounded
from simiankube.model.spec import Architecture, Service, SpecError, quote


@dataclass(frozen=True)
class Instance:
    """One nanoservice: a pod of its placement's workload, or one local process."""

    architecture: str
    service: Service
    region: str
    zone: str
    ordinal: int  # within its placement; a StatefulSet pod's ordinal
    workload: str  # the placement's workload name

    @property
    def name(self) -> str:
        """The Kubernetes-style instance name: a StatefulSet pod name, a local process name."""
        return f"{self.workload}-{self.ordinal}"


@dataclass(frozen=True)
class Placement:
    """A service in one region: exactly one workload when rendered."""

    service: Service
    region: str
    workload: str
    instances: tuple[Instance, ...]

    @property
    def replicas(self) -> int:
        return len(self.instances)

    @property
    def cross_zone(self) -> bool:
        return self.instances[0].zone == contract.ANY_ZONE


@dataclass(frozen=True)
class Topology:
    architecture: Architecture
    placements: tuple[Placement, ...]  # sorted by service order, then region order

    @property
    def instances(self) -> tuple[Instance, ...]:
        return tuple(i for p in self.placements for i in p.instances)

    @property
    def regions(self) -> tuple[str, ...]:
        used = {p.region for p in self.placements}
        return tuple(r for r in (*self.architecture.region_names, contract.GLOBAL_REGION) if r in used)

    def placements_of(self, service: str) -> tuple[Placement, ...]:
        return self._by_service.get(service, ())

    def callers_of(self, service: str) -> tuple[str, ...]:
        """The services that depend on `service`, sorted (its metrics label only these callers)."""
        return self._callers.get(service, ())

    @cached_property
    def _callers(self) -> dict[str, tuple[str, ...]]:
        callers: dict[str, set[str]] = {}
        for caller in self.architecture.services:
            for dep in caller.dependencies:
                callers.setdefault(dep, set()).add(caller.name)
        return {name: tuple(sorted(names)) for name, names in callers.items()}

    @cached_property
    def _by_service(self) -> dict[str, tuple[Placement, ...]]:
        grouped: dict[str, list[Placement]] = {}
        for placement in self.placements:
            grouped.setdefault(placement.service.name, []).append(placement)
        return {name: tuple(group) for name, group in grouped.items()}


def scaled_count(count: int, percent: int) -> int:
    """spigo's `-p`, except that a counted service never becomes a singleton."""
    return max(1, count * percent // 100)


def service_regions(service: Service, arch: Architecture) -> tuple[str, ...]:
    if service.regions == 0:
        return (contract.GLOBAL_REGION,)
    return arch.region_names[: service.regions * arch.scale.regions]


def expand(arch: Architecture) -> Topology:
    """Every placement of every service; workload names are unique or this raises."""
    placements = []
    owners: dict[str, str] = {}
    for index, service in enumerate(arch.services):
        for region in service_regions(service, arch):
            prefix = f"{arch.resource_name}-{service.kube_name}"
            if region == contract.GLOBAL_REGION:
                workload = bounded(prefix)
                zones = [contract.ANY_ZONE]
            else:
                workload = bounded(f"{prefix}-{region}")
                if service.count == 0:
                    zones = [contract.ANY_ZONE]
                else:
                    n = scaled_count(service.count, arch.scale.percent)
                    zones = [contract.ZONES[i % len(contract.ZONES)] for i in range(n)]
            if owners.setdefault(workload, service.name) != service.name:
                raise SpecError(
                    [f"services[{index}].name: {quote(service.name)} gets the workload name {quote(workload)}, "
                     f"which service {quote(owners[workload])} has already; rename one of them"]
                )
            instances = tuple(
                Instance(arch.name, service, region, zone, ordinal, workload) for ordinal, zone in enumerate(zones)
            )
            placements.append(Placement(service, region, workload, instances))
    return Topology(arch, tuple(placements))
