"""Reconcile one Architecture: parse → expand → render → plan → apply → prune.

Parse, render and plan are pure and CPU-bound (a second or more for 1,000
services): they run in a worker thread with the cyclic garbage collector
paused (a collection holds the interpreter lock while it walks the whole
heap), so the event loop keeps answering health probes and watch events.

The plan is pure: every rendered object is stamped with an owner reference
and a hash of its own content; an object whose live copy carries the same
hash and still holds every rendered field (no hand edit) is left alone, so a
resync with nothing changed writes nothing. Objects labelled as this
architecture's, owned by this very Architecture (uid) and no longer rendered
are pruned; anything else is never touched. An invalid spec, or a rendered
name that another owner (or nobody) already holds, raises before the first
write: what runs keeps running.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from simiankube import contract
from simiankube.operator.kube import CHILD_KINDS, LiveObject, Object, Payload
from simiankube.model.collector import cyclic_gc_paused
from simiankube.render import PodResources, RenderSettings, render
from simiankube.model.spec import Architecture, parse_document
from simiankube.model.topology import expand

# The hash of the applied object (without this annotation), compared before every apply.
ANNOTATION_APPLIED_HASH = f"{contract.API_GROUP}/applied-hash"
T = TypeVar("T")
# Rendered fields that an API server drops when their feature gate is off (an older cluster), by kind:
# their absence is no hand edit, else every resync there would apply again. The hash still tells a
# change of ours.
SERVER_MAY_DROP: dict[str, tuple[str, ...]] = {
    "StatefulSet": ("spec", "updateStrategy", "rollingUpdate", "maxUnavailable"),  # KEP-961
}


class ChildClient(Protocol):
    """The part of :class:`simiankube.operator.kube.Kube` a reconcile uses."""

    async def list_children(self, namespace: str, selector: str, kinds: Sequence[str] = CHILD_KINDS,
                            *, whole: bool = True) -> list[LiveObject]: ...

    async def apply(self, payload: Payload) -> None: ...

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
class Clash:
    """A rendered name that an object this Architecture does not control already has."""

    kind: str
    name: str
    holder: str  # its controlling owner, e.g. 'Architecture "shop"'; "" when it has none

    def __str__(self) -> str:
        held = f"controlled by {self.holder}" if self.holder else "not controlled by any owner"
        return f'{self.kind} "{self.name}" already exists, {held}'


class AlreadyOwned(Exception):
    """Rendered names are taken: nothing was applied (as controller-runtime's AlreadyOwned)."""

    def __init__(self, clashes: Sequence[Clash]) -> None:
        self.clashes = tuple(clashes)
        super().__init__("; ".join(map(str, clashes)) + "; left untouched: rename one of the owners or delete it")


@dataclass(frozen=True)
class Plan:
    apply: tuple[Payload, ...]  # in apply order
    prune: tuple[LiveObject, ...]
    unchanged: int
    clashes: tuple[Clash, ...] = ()


@dataclass(frozen=True)
class Outcome:
    architecture: Architecture
    desired: dict[str, int]  # instances per service (spigo names)
    applied: int
    pruned: int
    unchanged: int
    changed: tuple[str, ...] = ()  # "Kind/name" of each object applied


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


# One encoder for every object (json.dumps with options builds a new one per call); it keeps no state between calls.
_HASH_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def content_hash(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(_HASH_ENCODER.encode(obj).encode()).hexdigest()[:20]


def stamp(obj: Object, owner: Owner) -> Object:
    """The object as applied: owned by the Architecture, annotated with its own hash."""
    meta = obj["metadata"]
    owned = {**obj, "metadata": {**meta, "ownerReferences": [owner.reference]}}
    annotations = {**meta.get("annotations", {}), ANNOTATION_APPLIED_HASH: content_hash(owned)}
    return {**owned, "metadata": {**owned["metadata"], "annotations": annotations}}


@dataclass(frozen=True)
class Desired:
    architecture: Architecture
    objects: list[Object]  # rendered and stamped, in apply order
    instances: dict[str, int]  # instances per service (spigo names)


def desire(document: Mapping[str, Any], owner: Owner, image: str,
           resources: PodResources = PodResources()) -> Desired:
    """What the Architecture asks for: parsed, expanded and rendered once (raises SpecError, RenderError)."""
    arch = parse_body(document)
    topology = expand(arch)
    settings = RenderSettings(namespace=owner.namespace, image=image, resources=resources)
    objects = [stamp(obj, owner) for obj in render(topology, settings)]
    instances: dict[str, int] = {}
    for placement in topology.placements:
        instances[placement.service.name] = instances.get(placement.service.name, 0) + placement.replicas
    return Desired(arch, objects, instances)


def contains(live: Any, desired: Any) -> bool:
    """Whether ``live`` still holds every rendered field of ``desired``.

    The server adds defaults (ignored) and drops empty values (an absent key
    matches an empty or false one); anything else that differs is a hand edit.
    """
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            contains(live[key], value) if key in live else not value for key, value in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(map(contains, live, desired))
    return bool(live == desired)


def without(obj: Mapping[str, Any], path: Sequence[str]) -> Mapping[str, Any]:
    """``obj`` without the field at ``path`` (copies only along the path)."""
    head, *rest = path
    if head not in obj:
        return obj
    if not rest:
        return {key: value for key, value in obj.items() if key != head}
    return {**obj, head: without(obj[head], rest)}


def held(live: Any, desired: Object) -> bool:
    """Whether the live object holds every rendered field a server keeps (see SERVER_MAY_DROP)."""
    path = SERVER_MAY_DROP.get(desired["kind"])
    return contains(live, desired if path is None else without(desired, path))


def plan_changes(desired: Sequence[Object], live: Sequence[LiveObject], owner_uid: str,
                 others: Sequence[LiveObject] = ()) -> Plan:
    """What to apply (missing, changed or edited by hand), what to prune (ours, owned, not rendered),
    and which rendered names someone else holds (``others``: any object of the namespace)."""
    current = {(obj.kind, obj.name): obj for obj in live}
    taken = {(obj.kind, obj.name): obj for obj in others}
    to_apply = []
    clashes = []
    for obj in desired:
        key = (obj["kind"], obj["metadata"]["name"])
        existing = current.get(key) or taken.get(key)
        if existing is not None and existing.controller_uid != owner_uid:
            clashes.append(Clash(key[0], key[1], existing.controller))
        elif existing is None or existing.annotations.get(ANNOTATION_APPLIED_HASH) != \
                obj["metadata"]["annotations"][ANNOTATION_APPLIED_HASH] or not held(existing.body, obj):
            to_apply.append(obj)
    rendered = {(obj["kind"], obj["metadata"]["name"]) for obj in desired}
    to_prune = sorted(
        (obj for obj in live if (obj.kind, obj.name) not in rendered and owner_uid in obj.owner_uids),
        key=lambda o: (-CHILD_KINDS.index(o.kind), o.name),  # workloads first, their config last
    )
    return Plan(tuple(map(Payload.of, to_apply)), tuple(to_prune), len(desired) - len(to_apply) - len(clashes),
                tuple(clashes))


async def execute(plan: Plan, kube: ChildClient, namespace: str, concurrency: int) -> None:
    """Apply kind by kind in order (config before the workloads mounting it), then prune."""
    limit = asyncio.Semaphore(concurrency)

    async def apply(payload: Payload) -> None:
        async with limit:
            await kube.apply(payload)

    for kind in CHILD_KINDS:
        # Every apply of a kind ends before an error is raised: none runs on behind the reconcile's lock.
        results = await asyncio.gather(*(apply(payload) for payload in plan.apply if payload.kind == kind),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
    for obj in plan.prune:
        await kube.delete(obj.kind, namespace, obj.name, obj.uid)


async def off_the_loop(function: Callable[..., T], *args: Any) -> T:
    """Pure CPU-bound work in a worker thread, with the cyclic collector paused while it runs."""

    def run() -> T:
        with cyclic_gc_paused():
            return function(*args)

    return await asyncio.to_thread(run)


async def reconcile(body: Mapping[str, Any], kube: ChildClient, image: str, concurrency: int,
                    resources: PodResources = PodResources()) -> Outcome:
    """Converge the children of one Architecture to exactly its render.

    Raises SpecError or AlreadyOwned before anything is written.
    """
    metadata = body["metadata"]
    owner = Owner(namespace=metadata["namespace"], name=metadata["name"], uid=metadata["uid"])
    # The worker thread reads a snapshot: kopf may swap the body it passed while the thread runs.
    document = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
                "metadata": {"name": metadata.get("name")}, "spec": copy.deepcopy(dict(body.get("spec") or {}))}
    # Raises on an invalid spec or clashing rendered names, before anything is written.
    desired = await off_the_loop(desire, document, owner, image, resources)
    live = await kube.list_children(owner.namespace, child_selector(desired.architecture.resource_name))
    ours = {(obj.kind, obj.name) for obj in live}
    missing = sorted({obj["kind"] for obj in desired.objects if (obj["kind"], obj["metadata"]["name"]) not in ours},
                     key=CHILD_KINDS.index)
    # Names about to be created may be held by anything in the namespace: look, metadata only.
    others = await kube.list_children(owner.namespace, "", missing, whole=False) if missing else []
    plan = await off_the_loop(plan_changes, desired.objects, live, owner.uid, others)
    arch, instances = desired.architecture, desired.instances
    del desired, live, others  # while it applies, the loop keeps the serialized objects only
    if plan.clashes:
        raise AlreadyOwned(plan.clashes)
    await execute(plan, kube, owner.namespace, concurrency)
    changed = tuple(payload.key for payload in plan.apply)
    return Outcome(arch, instances, len(plan.apply), len(plan.prune), plan.unchanged, changed)
