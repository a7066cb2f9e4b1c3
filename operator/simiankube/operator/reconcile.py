"""Reconcile one Architecture: parse → expand → render → plan → apply → prune.

The plan is pure: every rendered object is stamped with an owner reference
and a hash of its own content; an object whose live copy carries the same
hash is left alone, so a resync with nothing changed writes nothing. Objects
labelled as this architecture's, owned by this very Architecture (uid) and no
longer rendered are pruned; anything else is never touched. An invalid spec
raises before the first write: what runs keeps running.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from simiankube import contract
from simiankube.operator.kube import CHILD_KINDS, LiveObject, Object
from simiankube.render import RenderSettings, render
from simiankube.model.spec import Architecture, parse_document
from simiankube.model.topology import expand

# The hash of the applied object (without this annotation), compared before every apply.
ANNOTATION_APPLIED_HASH = f"{contract.API_GROUP}/applied-hash"


class ChildClient(Protocol):
    """The part of :class:`simiankube.operator.kube.Kube` a reconcile uses."""

    async def list_children(self, namespace: str, selector: str) -> list[LiveObject]: ...

    async def apply(self, obj: Object) -> None: ...

    async def delete(self, kind: str, namespace: str, name: str, uid: str,
                     grace_seconds: int | None = None) -> bool: ...


@dataclass(frozen=True)
class Owner:
    """The Architecture being reconciled, as owner references need it."""

    namespace: str
    name: str
    uid: str

    @property
    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{contract.API_GROUP}/{contract.API_VERSION}",
            "kind": contract.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    @property
    def object_reference(self) -> dict[str, Any]:
        """Enough of the Architecture's body to post Events about it."""
        return {
            "apiVersion": f"{contract.API_GROUP}/{contract.API_VERSION}",
            "kind": contract.KIND,
            "metadata": {"namespace": self.namespace, "name": self.name, "uid": self.uid},
        }


@dataclass(frozen=True)
class Plan:
    apply: tuple[Object, ...]  # in apply order
    prune: tuple[LiveObject, ...]
    unchanged: int


@dataclass(frozen=True)
class Outcome:
    architecture: Architecture
    desired: dict[str, int]  # instances per service (spigo names)
    applied: int
    pruned: int
    unchanged: int


def parse_body(body: Mapping[str, Any]) -> Architecture:
    """The validated model of a CR body (raises SpecError with every problem)."""
    metadata = body.get("metadata") or {}
    return parse_document({
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {"name": metadata.get("name")},
        "spec": dict(body.get("spec") or {}),
    })


def child_selector(resource_name: str) -> str:
    return f"{contract.LABEL_ARCHITECTURE}={resource_name},{contract.LABEL_MANAGED_BY}={contract.MANAGED_BY}"


def content_hash(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


def stamp(obj: Object, owner: Owner) -> Object:
    """The object as applied: owned by the Architecture, annotated with its own hash."""
    meta = obj["metadata"]
    owned = {**obj, "metadata": {**meta, "ownerReferences": [owner.reference]}}
    annotations = {**meta.get("annotations", {}), ANNOTATION_APPLIED_HASH: content_hash(owned)}
    return {**owned, "metadata": {**owned["metadata"], "annotations": annotations}}


def build_children(arch: Architecture, owner: Owner, image: str) -> list[Object]:
    settings = RenderSettings(namespace=owner.namespace, image=image)
    return [stamp(obj, owner) for obj in render(expand(arch), settings)]


def desired_instances(arch: Architecture) -> dict[str, int]:
    counts: dict[str, int] = {}
    for placement in expand(arch).placements:
        counts[placement.service.name] = counts.get(placement.service.name, 0) + placement.replicas
    return counts


def plan_changes(desired: Sequence[Object], live: Sequence[LiveObject], owner_uid: str) -> Plan:
    """What to apply (missing or different) and what to prune (ours, owned, not rendered)."""
    current = {(obj.kind, obj.name): obj for obj in live}
    to_apply = []
    for obj in desired:
        existing = current.get((obj["kind"], obj["metadata"]["name"]))
        if existing is None or existing.annotations.get(ANNOTATION_APPLIED_HASH) != \
                obj["metadata"]["annotations"][ANNOTATION_APPLIED_HASH]:
            to_apply.append(obj)
    rendered = {(obj["kind"], obj["metadata"]["name"]) for obj in desired}
    to_prune = sorted(
        (obj for obj in live if (obj.kind, obj.name) not in rendered and owner_uid in obj.owner_uids),
        key=lambda o: (-CHILD_KINDS.index(o.kind), o.name),  # workloads first, their config last
    )
    return Plan(tuple(to_apply), tuple(to_prune), len(desired) - len(to_apply))


async def execute(plan: Plan, kube: ChildClient, namespace: str, concurrency: int) -> None:
    """Apply kind by kind in order (config before the workloads mounting it), then prune."""
    limit = asyncio.Semaphore(concurrency)

    async def apply(obj: Object) -> None:
        async with limit:
            await kube.apply(obj)

    for kind in CHILD_KINDS:
        await asyncio.gather(*(apply(obj) for obj in plan.apply if obj["kind"] == kind))
    for obj in plan.prune:
        await kube.delete(obj.kind, namespace, obj.name, obj.uid)


async def reconcile(body: Mapping[str, Any], kube: ChildClient, image: str, concurrency: int) -> Outcome:
    """Converge the children of one Architecture to exactly its render."""
    arch = parse_body(body)  # raises before anything is written
    metadata = body["metadata"]
    owner = Owner(namespace=metadata["namespace"], name=metadata["name"], uid=metadata["uid"])
    desired = build_children(arch, owner, image)
    live = await kube.list_children(owner.namespace, child_selector(arch.resource_name))
    plan = plan_changes(desired, live, owner.uid)
    await execute(plan, kube, owner.namespace, concurrency)
    return Outcome(arch, desired_instances(arch), len(plan.apply), len(plan.prune), plan.unchanged)
