"""The status keeper: writes exactly the difference, once per burst of workload events."""

from __future__ import annotations

import asyncio
from typing import Any

from simiankube.operator.reconcile import Owner
from simiankube.operator.status import build_status
from simiankube.operator.tracking import Change, StatusKeeper, WorkloadView

OWNER = Owner("demo", "lamp", "arch-uid")


def deployment(ready: int) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {
        "name": "lamp-web", "namespace": "demo", "uid": "d1", "generation": 1,
        "annotations": {"simiankube.io/spigo-name": "web"},
        "ownerReferences": [{"kind": "Architecture", "name": "lamp", "uid": OWNER.uid, "controller": True}]},
        "spec": {"replicas": 2}, "status": {"observedGeneration": 1, "readyReplicas": ready, "updatedReplicas": 2}}


def view_of(*bodies: dict[str, Any]) -> WorkloadView:
    view = WorkloadView()
    view.replace("Deployment", None, bodies)
    return view


def rebuild(view: WorkloadView) -> Change:
    """What the controller's workload refresh applies: the status from the view as it is then."""
    return lambda previous: build_status(previous, view.owned(OWNER), now="T")


async def test_same_facts_write_nothing_and_changes_write_a_merge_patch(kube: Any) -> None:
    kube.add({"kind": "Architecture", "metadata": {"name": "lamp", "namespace": "demo", "uid": OWNER.uid}})
    keeper = StatusKeeper(kube, 0)
    workloads = view_of(deployment(2)).owned(OWNER)
    facts = {"generation": 1, "desired": {"web": 2}, "problems": []}
    await keeper.update(OWNER, lambda s: build_status(s, workloads, now="T", **facts))
    await keeper.update(OWNER, lambda s: build_status(s, workloads, now="T2", **facts))
    assert [w[0] for w in kube.writes] == ["patch"]
    assert kube.objects[("Architecture", "demo", "lamp")]["status"]["readyInstances"] == 2


async def test_a_burst_of_workload_events_makes_one_write(kube: Any) -> None:
    kube.add({"kind": "Architecture", "metadata": {"name": "lamp", "namespace": "demo", "uid": OWNER.uid},
              "status": {"instances": 2, "readyInstances": 0}})
    keeper = StatusKeeper(kube, 0.05)
    flips: list[str] = []
    for ready in (0, 1, 2):
        keeper.refresh_soon(OWNER, rebuild(view_of(deployment(ready))), lambda before, after: flips.append("x"))
    await asyncio.sleep(0.2)
    assert len(kube.writes) == 1 and flips == ["x"]
    await keeper.close()


async def test_events_during_a_slow_write_make_one_more_write_with_the_newest_view(kube: Any) -> None:
    """Refreshes never queue behind a slow status write (each with the view of its own moment)."""
    kube.add({"kind": "Architecture", "metadata": {"name": "lamp", "namespace": "demo", "uid": OWNER.uid},
              "status": {"instances": 2, "readyInstances": 0}})
    patch_status = kube.patch_status
    written: list[int] = []

    async def slow_patch(namespace: str, name: str, patch: dict[str, Any]) -> None:
        await asyncio.sleep(0.3)
        await patch_status(namespace, name, patch)
        written.append(kube.objects[("Architecture", namespace, name)]["status"]["readyInstances"])

    kube.patch_status = slow_patch
    keeper = StatusKeeper(kube, 0.01)
    view = view_of(deployment(0))
    keeper.refresh_soon(OWNER, rebuild(view), lambda before, after: None)
    for ready in (1, 2, 1, 2):  # while the first write is under way
        await asyncio.sleep(0.05)
        view.update("MODIFIED", deployment(ready))
        keeper.refresh_soon(OWNER, rebuild(view), lambda before, after: None)
    async with asyncio.timeout(30):
        while len(written) < 2:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.6)  # two slow writes' time: a queued third write would land in it
    assert written == [0, 2]
    await keeper.close()


async def test_a_deleted_architecture_is_not_written(kube: Any) -> None:
    keeper = StatusKeeper(kube, 0)
    assert await keeper.update(OWNER, lambda s: {**s, "x": 1}) is None
    kube.add({"kind": "Architecture", "metadata": {"name": "lamp", "namespace": "demo", "uid": OWNER.uid}})
    assert await keeper.update(OWNER, lambda s: {**s, "x": 1}) is not None
    del kube.objects[("Architecture", "demo", "lamp")]  # gone, while the keeper still remembers it
    assert await keeper.update(OWNER, lambda s: {**s, "x": 2}) is None
    assert keeper.known(OWNER) == {}
    assert [w[0] for w in kube.writes] == ["patch"]


def test_workloads_without_an_owning_architecture_are_not_kept() -> None:
    body = deployment(1)
    body["metadata"]["ownerReferences"] = []
    assert view_of(body).owned(OWNER) == []


def test_the_view_follows_watch_events_and_a_relist_drops_what_vanished() -> None:
    view = view_of(deployment(1))
    assert [(w.name, w.ready) for w in view.owned(OWNER)] == [("lamp-web", 1)]
    view.update("MODIFIED", deployment(2))
    assert [(w.name, w.ready) for w in view.owned(OWNER)] == [("lamp-web", 2)]
    other = deployment(0)
    other["metadata"].update(name="lamp-db", uid="d2", namespace="elsewhere")
    view.update("ADDED", other)
    set_ = {"kind": "StatefulSet", "metadata": {**deployment(1)["metadata"], "name": "lamp-store", "uid": "s1"},
            "spec": {"replicas": 1}, "status": {}}
    view.update("ADDED", set_)
    # A relist of Deployments in "demo" (after a watch expired) keeps other kinds and namespaces.
    view.replace("Deployment", "demo", [])
    assert [w.name for w in view.owned(OWNER)] == ["lamp-db", "lamp-store"]
    view.update("DELETED", set_)
    view.update("DELETED", other)
    assert view.owned(OWNER) == []


async def test_a_refresh_waits_after_a_slow_write_as_long_as_it_took(kube: Any) -> None:
    """A busy API server (seconds per write of a big Architecture) gets the object free half the time."""
    kube.add({"kind": "Architecture", "metadata": {"name": "lamp", "namespace": "demo", "uid": OWNER.uid}})
    patch_status = kube.patch_status
    ended: list[float] = []
    began: list[float] = []

    async def slow_patch(namespace: str, name: str, patch: dict[str, Any]) -> None:
        began.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.3)
        await patch_status(namespace, name, patch)
        ended.append(asyncio.get_running_loop().time())

    kube.patch_status = slow_patch
    keeper = StatusKeeper(kube, 0.01)
    view = view_of(deployment(0))
    keeper.refresh_soon(OWNER, rebuild(view), lambda before, after: None)
    async with asyncio.timeout(30):
        while not ended:
            await asyncio.sleep(0.01)
    view.update("MODIFIED", deployment(2))
    keeper.refresh_soon(OWNER, rebuild(view), lambda before, after: None)
    async with asyncio.timeout(30):
        while len(ended) < 2:
            await asyncio.sleep(0.01)
    assert began[1] - ended[0] >= 0.29, "the second write came sooner than the first took"
    await keeper.close()
