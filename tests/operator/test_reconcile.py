"""Reconcile against a fake API: exact convergence, no-op resyncs, prune, invalid specs."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from simiankube import contract
from simiankube.operator.kube import KubeError, Payload
from simiankube.operator.reconcile import (
    ANNOTATION_APPLIED_HASH, AlreadyOwned, Owner, contains, desire, reconcile)
from simiankube.model.spec import SpecError

REPO = Path(__file__).resolve().parents[2]
IMAGE = "example/nanoservice:test"


def architecture(name: str = "lamp", scale: int = 10) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((REPO / "architectures" / f"{name}.yaml").read_text())
    body["metadata"].update(namespace="demo", uid=f"arch-uid-{name}", generation=1)
    body["spec"]["scale"] = {"percent": scale}
    return body


def children(kube: Any) -> set[tuple[str, str]]:
    return {(kind, name) for (kind, _, name) in kube.objects if kind != "Architecture"}


def expected(body: dict[str, Any]) -> list[dict[str, Any]]:
    meta = body["metadata"]
    objects: list[dict[str, Any]] = desire(body, Owner(meta["namespace"], meta["name"], meta["uid"]), IMAGE).objects
    return objects


async def test_first_reconcile_applies_exactly_the_render_with_owner_references(kube: Any) -> None:
    body = architecture()
    outcome = await reconcile(body, kube, IMAGE, 4)
    render = expected(body)
    assert children(kube) == {(o["kind"], o["metadata"]["name"]) for o in render}
    assert outcome.applied == len(render) and outcome.pruned == 0 and outcome.unchanged == 0
    for obj in render:
        live = kube.objects[(obj["kind"], "demo", obj["metadata"]["name"])]
        (ref,) = live["metadata"]["ownerReferences"]
        assert ref == {"apiVersion": "simiankube.io/v1alpha1", "kind": "Architecture", "name": "lamp",
                       "uid": "arch-uid-lamp", "controller": True, "blockOwnerDeletion": True}
        assert ANNOTATION_APPLIED_HASH in live["metadata"]["annotations"]
    assert outcome.desired == {"rds-mysql": 1, "memcache": 1, "webserver": 1, "webserver-elb": 1, "www": 1}


async def test_kinds_are_applied_config_before_workloads(kube: Any) -> None:
    await reconcile(architecture(), kube, IMAGE, 4)
    kinds = [kind for _, kind, _ in kube.writes]
    order = ["NetworkPolicy", "ConfigMap", "Service", "StatefulSet", "Deployment"]
    assert kinds == sorted(kinds, key=order.index)


async def test_resync_with_nothing_changed_writes_nothing(kube: Any) -> None:
    body = architecture()
    await reconcile(body, kube, IMAGE, 4)
    kube.writes.clear()
    outcome = await reconcile(body, kube, IMAGE, 4)
    assert kube.writes == []
    assert outcome.applied == 0 and outcome.pruned == 0 and outcome.unchanged == len(expected(body))


async def test_count_change_converges_to_the_new_render(kube: Any) -> None:
    body = architecture(scale=10)
    await reconcile(body, kube, IMAGE, 4)
    kube.writes.clear()
    bigger = copy.deepcopy(body)
    bigger["spec"]["scale"] = {"percent": 50}
    await reconcile(bigger, kube, IMAGE, 4)
    assert kube.writes, "a new count must be applied"
    assert all(verb == "apply" for verb, _, _ in kube.writes)
    webserver = kube.objects[("Deployment", "demo", "lamp-webserver-us-east-1")]
    assert webserver["spec"]["replicas"] == 9
    assert children(kube) == {(o["kind"], o["metadata"]["name"]) for o in expected(bigger)}


async def test_removed_service_is_pruned_and_foreign_objects_are_kept(kube: Any) -> None:
    body = architecture()
    await reconcile(body, kube, IMAGE, 4)
    # Same labels, not owned by this Architecture: never ours to delete.
    kube.add({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "look-alike", "namespace": "demo",
        "labels": {contract.LABEL_ARCHITECTURE: "lamp", contract.LABEL_MANAGED_BY: contract.MANAGED_BY}}})
    smaller = copy.deepcopy(body)
    smaller["spec"]["services"] = [s for s in smaller["spec"]["services"] if s["name"] != "memcache"]
    for service in smaller["spec"]["services"]:
        service["dependencies"] = [d for d in service["dependencies"] if d != "memcache"]
    kube.writes.clear()
    outcome = await reconcile(smaller, kube, IMAGE, 4)
    assert outcome.pruned > 0
    assert not [name for _, name in children(kube) if "memcache" in name]
    assert children(kube) == {(o["kind"], o["metadata"]["name"]) for o in expected(smaller)} | {
        ("ConfigMap", "look-alike")}
    deletes = [(kind, name) for verb, kind, name in kube.writes if verb == "delete"]
    assert deletes[0][0] in ("StatefulSet", "Deployment"), "workloads go before their configuration"


async def test_invalid_spec_raises_every_problem_before_any_write(kube: Any) -> None:
    body = architecture()
    await reconcile(body, kube, IMAGE, 4)
    before = copy.deepcopy(kube.objects)
    kube.writes.clear()
    broken = copy.deepcopy(body)
    broken["spec"]["services"][2]["dependencies"].append("nowhere")
    broken["spec"]["victim"] = "nobody"
    with pytest.raises(SpecError) as caught:
        await reconcile(broken, kube, IMAGE, 4)
    assert len(caught.value.problems) == 2
    assert kube.writes == [] and kube.objects == before


async def test_another_architecture_in_the_namespace_is_untouched(kube: Any) -> None:
    await reconcile(architecture("riak"), kube, IMAGE, 4)
    riak = {k for k in children(kube)}
    await reconcile(architecture("lamp"), kube, IMAGE, 4)
    assert riak <= children(kube)


def shop(name: str, service: str) -> dict[str, Any]:
    return {"apiVersion": "simiankube.io/v1alpha1", "kind": "Architecture",
            "metadata": {"name": name, "namespace": "demo", "uid": f"uid-{name}", "generation": 1},
            "spec": {"arch": name, "services": [{"name": service, "package": "karyon", "count": 1}]}}


async def test_a_name_held_by_another_architecture_is_never_taken_over(kube: Any) -> None:
    await reconcile(shop("shop", "cart-api"), kube, IMAGE, 4)
    before = copy.deepcopy(kube.objects)
    kube.writes.clear()
    with pytest.raises(AlreadyOwned) as caught:
        await reconcile(shop("shop-cart", "api"), kube, IMAGE, 4)
    assert kube.writes == [] and kube.objects == before, "nothing partly applied"
    assert {(c.kind, c.name, c.holder) for c in caught.value.clashes} == {
        (kind, name, 'Architecture "shop"') for kind, name in (
            ("NetworkPolicy", "shop-cart-api"), ("ConfigMap", "shop-cart-api"), ("Service", "shop-cart-api"),
            ("Service", "shop-cart-api-peers"), ("Deployment", "shop-cart-api"))}
    assert 'Deployment "shop-cart-api" already exists, controlled by Architecture "shop"' in str(caught.value)


async def test_a_name_held_by_an_object_without_owner_is_never_taken_over(kube: Any) -> None:
    kube.add({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop-api", "namespace": "demo"}})
    with pytest.raises(AlreadyOwned) as caught:
        await reconcile(shop("shop", "api"), kube, IMAGE, 4)
    assert [str(c) for c in caught.value.clashes] == ['Service "shop-api" already exists, not controlled by any owner']
    assert kube.writes == []


async def test_hand_edits_are_restored_and_server_defaults_are_not_edits(kube: Any) -> None:
    body = architecture()
    await reconcile(body, kube, IMAGE, 4)
    deployment = kube.objects[("Deployment", "demo", "lamp-webserver-us-east-1")]
    deployment["spec"]["progressDeadlineSeconds"] = 600  # a server default: not ours, not an edit
    deployment["spec"]["template"]["spec"].pop("volumes")[0]  # dropped by hand
    service = kube.objects[("Service", "demo", "lamp-webserver-us-east-1")]
    service["spec"]["ports"][0]["port"] = 9999
    kube.writes.clear()
    outcome = await reconcile(body, kube, IMAGE, 4)
    assert sorted(outcome.changed) == ["Deployment/lamp-webserver-us-east-1", "Service/lamp-webserver-us-east-1"]
    assert kube.objects[("Service", "demo", "lamp-webserver-us-east-1")]["spec"]["ports"][0]["port"] != 9999
    kube.writes.clear()
    kube.objects[("Deployment", "demo", "lamp-webserver-us-east-1")]["spec"]["progressDeadlineSeconds"] = 600
    assert (await reconcile(body, kube, IMAGE, 4)).applied == 0 and kube.writes == []


async def test_a_field_an_older_server_drops_is_no_hand_edit(kube: Any) -> None:
    """A cluster whose StatefulSets lack maxUnavailable (feature gate off) drops it: no write on every resync,
    but a real edit of the same object is still repaired."""
    body = architecture()
    await reconcile(body, kube, IMAGE, 4)
    statefulset = kube.objects[("StatefulSet", "demo", "lamp-memcache-us-east-1")]
    assert statefulset["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": "50%"}
    statefulset["spec"]["updateStrategy"]["rollingUpdate"] = {"partition": 0}  # as such a server keeps it
    kube.writes.clear()
    assert (await reconcile(body, kube, IMAGE, 4)).applied == 0 and kube.writes == []
    statefulset["spec"]["replicas"] = 5
    assert list((await reconcile(body, kube, IMAGE, 4)).changed) == ["StatefulSet/lamp-memcache-us-east-1"]


def test_contains_ignores_defaults_and_dropped_empty_values() -> None:
    assert contains({"a": 1, "b": {"c": [1, {"d": 2, "e": 3}]}}, {"a": 1, "b": {"c": [1, {"d": 2}]}, "f": [], "g": False})
    assert not contains({"a": 1}, {"a": 2})
    assert not contains({"l": [1, 2]}, {"l": [1]})
    assert not contains({}, {"x": {"y": 1}})


async def test_a_failed_apply_leaves_no_apply_running_behind_it(kube: Any) -> None:
    running = 0
    apply = kube.apply

    async def slow_or_failing(payload: Payload) -> None:
        nonlocal running
        if payload.name == "lamp-memcache":
            raise KubeError(403, "forbidden")
        running += 1
        await asyncio.sleep(0.05)
        await apply(payload)
        running -= 1

    kube.apply = slow_or_failing
    with pytest.raises(KubeError):
        await reconcile(architecture(), kube, IMAGE, 4)
    assert running == 0
