"""Render: the single source of truth for what gets deployed.

A pure function from an expanded topology and explicit settings to sorted,
deterministic Kubernetes objects (no clock, no randomness, no cluster). The
operator applies exactly this; the local runner runs the configurations in it.
"""

from __future__ import annotations

from typing import Any

from simiankube import contract
from simiankube.model.collector import cyclic_gc_paused
from simiankube.model.spec import SpecError, quote
from simiankube.render.nanoconfig import NanoserviceConfigs, build_nanoservice_config
from simiankube.render.networkpolicies import build_network_policies
from simiankube.render.objects import build_placement_objects
from simiankube.render.settings import PodResources, RenderSettings, parse_resources
from simiankube.model.topology import Topology

__all__ = ["PodResources", "RenderSettings", "build_nanoservice_config", "parse_resources", "render"]

# Apply order: configuration before the workloads that mount it.
KIND_ORDER = ("NetworkPolicy", "ConfigMap", "Service", "StatefulSet", "Deployment")
_KIND_RANK = {kind: rank for rank, kind in enumerate(KIND_ORDER)}


def render(topology: Topology, settings: RenderSettings) -> list[dict[str, Any]]:
    with cyclic_gc_paused():
        return _render(topology, settings)


def _render(topology: Topology, settings: RenderSettings) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    configs = NanoserviceConfigs(topology)
    for placement in topology.placements:
        config_json = configs.to_json(placement)
        objects.extend(build_placement_objects(topology, placement, config_json, settings))
    objects.extend(build_network_policies(topology, settings))
    # Each key computed once serves both the name check and the order (a third less than a set and a sort).
    by_key = {(_KIND_RANK[obj["kind"]], obj["metadata"]["name"]): obj for obj in objects}
    if len(by_key) != len(objects):
        check_unique_names(topology, objects)
    return [by_key[key] for key in sorted(by_key)]


def check_unique_names(topology: Topology, objects: list[dict[str, Any]]) -> None:
    """Every rendered object is one Kubernetes object: two with one kind and name would overwrite each other.

    Raises SpecError naming both services (e.g. ``db`` renders the Service
    ``<arch>-db-peers``, which service ``db-peers`` renders too).
    """
    if len({(obj["kind"], obj["metadata"]["name"]) for obj in objects}) == len(objects):
        return
    index = {service.name: i for i, service in enumerate(topology.architecture.services)}
    first: dict[tuple[str, str], str] = {}
    problems = []
    for obj in objects:
        key = (obj["kind"], obj["metadata"]["name"])
        source = (obj["metadata"].get("annotations") or {}).get(contract.ANNOTATION_SPIGO_NAME, "")
        if key not in first:
            first[key] = source
            continue
        at = f"services[{index[source]}].name" if source in index else "metadata.name"
        problems.append(
            f"{at}: {quote(source or topology.architecture.resource_name)} renders the {key[0]} {quote(key[1])}, "
            f"which {quote(first[key] or topology.architecture.resource_name)} renders too; rename one of them"
        )
    if problems:
        raise SpecError(problems)
