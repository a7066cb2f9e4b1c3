"""The controller against a fake API: repairs retried until they succeed, one reconcile at a time."""

from __future__ import annotations

import asyncio
import copy
import gc
import logging
import threading
import time
from typing import Any


from simiankube.model import generate
from simiankube.operator import controller as controller_module
from simiankube.operator import reconcile as reconcile_module
from simiankube.operator.controller import Controller, OperatorConfig, owner_of
from simiankube.operator.kube import KubeError
from simiankube.operator.metrics import Metrics
from simiankube.operator.tracking import WorkloadView
from tests.operator.test_reconcile import architecture


def controller(kube: Any) -> Controller:
    return Controller(OperatorConfig(status_delay_seconds=0), kube, Metrics(), None, WorkloadView())


async def settle(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_failing_repair_is_retried_with_backoff_until_it_succeeds(kube: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(controller_module, "REPAIR_DELAY_SECONDS", 0.01)
    monkeypatch.setattr(controller_module, "REPAIR_BACKOFF_MAX_SECONDS", 0.02)
    body = kube.add({**architecture(), "kind": "Architecture"})
    failures = [KubeError(403, "deployments.apps is forbidden"), KubeError(422, "invalid"), KubeError(409, "conflict")]
    reasons: list[str] = []
    list_children = kube.list_children

    async def flaky(*args: Any, **kwargs: Any) -> Any:  # once per reconcile, before any write
        if failures:
            raise failures.pop(0)
        return await list_children(*args, **kwargs)

    async def patch_status(namespace: str, name: str, patch: dict[str, Any]) -> None:
        await original_patch(namespace, name, patch)
        reconciled = [c for c in kube.objects[("Architecture", namespace, name)]["status"].get("conditions") or []
                      if c["type"] == "Reconciled"]
        reasons.extend(c["reason"] for c in reconciled)

    original_patch = kube.patch_status
    kube.list_children, kube.patch_status = flaky, patch_status
    control = controller(kube)
    control.repair_soon(owner_of(body))
    await settle(lambda: not control._repairs)
    assert failures == []
    assert [r for i, r in enumerate(reasons) if i == 0 or reasons[i - 1] != r] == [
        "Forbidden", "Unprocessable", "Conflict", "Applied"]
    assert any(kind == "Deployment" for (kind, _, _) in kube.objects)
    await control.close()


async def test_reconciles_of_one_architecture_never_overlap(kube: Any) -> None:
    body = kube.add({**architecture(), "kind": "Architecture"})
    running = 0
    most = 0
    list_children = kube.list_children

    async def slow_list(*args: Any, **kwargs: Any) -> Any:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        try:
            return await list_children(*args, **kwargs)
        finally:
            running -= 1

    kube.list_children = slow_list
    control = controller(kube)
    logger = logging.getLogger("test")
    await asyncio.gather(*(control.reconcile(copy.deepcopy(body), logger) for _ in range(3)))
    assert most == 1
    await control.close()


async def test_an_older_generation_is_never_reconciled_after_a_newer_one(kube: Any) -> None:
    body = kube.add({**architecture(), "kind": "Architecture"})
    newer = copy.deepcopy(body)
    newer["metadata"]["generation"] = 2
    newer["spec"]["scale"] = {"percent": 50}
    control = controller(kube)
    logger = logging.getLogger("test")
    await control.reconcile(newer, logger)
    kube.writes.clear()
    await control.reconcile(body, logger)  # generation 1, arriving late: its spec must not come back
    assert kube.writes == []
    assert kube.objects[("Deployment", "demo", "lamp-webserver-us-east-1")]["spec"]["replicas"] == 9
    assert kube.objects[("Architecture", "demo", "lamp")]["status"]["observedGeneration"] == 2
    await control.close()


async def test_reconciling_1000_services_leaves_the_event_loop_free(kube: Any, monkeypatch: Any) -> None:
    """Render and plan run in a worker thread: the loop (health probe, watches) gets a turn every few ms.

    Where they ran is recorded directly (render got fast enough that 1,000 services rendered on the loop
    would no longer stand out by time alone). The loop's longest turn is measured as the loop thread's own
    CPU time between two turns of a 20 ms timer, so that a machine loaded by other processes (which delays
    the whole process) cannot fail it: the longest (status of 1,000 services) is 0.15-0.18 s on a quiet
    machine; the bound leaves room for a busy sibling core, and catches a turn that grows by several times.
    """
    body = generate.generate(1000, seed=0, name="big")
    body["metadata"].update(namespace="demo", uid="big-uid", generation=1)
    body = kube.add(body)
    stored = kube.apply

    async def apply_over_the_network(payload: Any) -> None:
        """A real apply waits on its socket: without it, every apply of a kind ran in one turn of the loop."""
        await asyncio.sleep(0)
        await stored(payload)

    monkeypatch.setattr(kube, "apply", apply_over_the_network)
    ran_in: dict[str, int] = {}  # pure step -> the thread it ran in

    def recorded(name: str) -> Any:
        step = getattr(reconcile_module, name)

        def run(*args: Any) -> Any:
            ran_in[name] = threading.get_ident()
            return step(*args)

        return run

    for name in ("desire", "plan_changes"):
        monkeypatch.setattr(reconcile_module, name, recorded(name))
    control = controller(kube)
    busy: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        while not done.is_set():
            began = time.thread_time()
            await asyncio.sleep(0.02)
            busy.append(time.thread_time() - began)

    # The heap earlier tests of this session left behind is not the operator's: a collection walking it on
    # the loop (0.37 s measured in a full run) would be charged to the reconcile.
    gc.collect()
    gc.freeze()
    try:
        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0.1)
        await control.reconcile(body, logging.LoggerAdapter(logging.getLogger(__name__), {}))
        done.set()
        await ticker
    finally:
        gc.unfreeze()
    assert kube.objects[("Architecture", "demo", "big")]["status"]["serviceCount"] == 1000
    assert sum(1 for (kind, _, _) in kube.objects if kind in ("Deployment", "StatefulSet")) >= 1000
    assert set(ran_in) == {"desire", "plan_changes"}
    assert threading.get_ident() not in ran_in.values(), "render or plan ran on the event loop"
    assert max(busy) < 0.6, f"the loop was busy {max(busy):.2f} s between two turns while reconciling"
    await control.close()


async def test_a_watch_that_broke_off_repairs_every_architecture(kube: Any, monkeypatch: Any) -> None:
    """Events in the gap are lost: every known Architecture is reconciled once the watch starts again."""
    monkeypatch.setattr(controller_module, "REPAIR_DELAY_SECONDS", 0.01)
    body = kube.add({**architecture(), "kind": "Architecture"})
    starts: list[str] = []

    async def watch(kind: str, namespace: str | None, selector: str, on_list: Any = None) -> Any:
        starts.append(kind)
        if len(starts) == 1:
            raise KubeError(410, "too old resource version")
        await asyncio.Event().wait()  # then quiet
        yield  # pragma: no cover

    kube.watch = watch
    control = controller(kube)
    control.architecture_seen("ADDED", body)
    task = asyncio.create_task(control._watch("ConfigMap", "demo"))
    await settle(lambda: any(kind == "Deployment" for (kind, _, _) in kube.objects), timeout=15)
    assert starts == ["ConfigMap", "ConfigMap"]
    task.cancel()
    await control.close()


async def test_workload_events_before_the_first_reconcile_write_no_partial_counts(kube: Any) -> None:
    """While the first apply runs, the workloads applied so far are not what the Architecture asks for."""
    body = kube.add({**architecture(), "kind": "Architecture"})
    control = controller(kube)
    deployment = {"kind": "Deployment", "metadata": {
        "name": "lamp-webserver-us-east-1", "namespace": "demo", "uid": "d1", "generation": 1,
        "annotations": {"simiankube.io/spigo-name": "webserver"},
        "ownerReferences": [{"kind": "Architecture", "name": "lamp", "uid": body["metadata"]["uid"],
                             "controller": True}]},
        "spec": {"replicas": 1}, "status": {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1}}
    control.workload_changed("ADDED", deployment)
    await asyncio.sleep(0.1)
    assert kube.writes == []
    await control.reconcile(body, logging.getLogger("test"))
    kube.writes.clear()
    control.workload_changed("MODIFIED", {**deployment, "status": {**deployment["status"], "readyReplicas": 0}})
    await settle(lambda: bool(kube.writes))
    status = kube.objects[("Architecture", "demo", "lamp")]["status"]
    assert status["serviceCount"] == 5 and status["notReady"]["webserver"] == {"desired": 1, "ready": 0}
    await control.close()
