"""The chaos controller against a fake API: guards, dry run, kills and recovery."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from simiankube import contract
from simiankube.operator.chaos import ChaosController, PodFacts, decide, excluded, next_delay
from simiankube.operator.metrics import Metrics
from simiankube.operator.reconcile import Owner, parse_body
from simiankube.operator.tracking import StatusKeeper, WorkloadView
from simiankube.model.spec import Chaos

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)
OWNER = Owner("demo", "lamp", "arch-uid")
LABELS = {contract.LABEL_ARCHITECTURE: "lamp", contract.LABEL_SERVICE: "webserver",
          contract.LABEL_MANAGED_BY: contract.MANAGED_BY}


def facts(name: str, ready: bool = True, age: float = 600, terminating: bool = False) -> PodFacts:
    return PodFacts(name, f"uid-{name}", ready, terminating, age, "ReplicaSet", "rs", "rs-uid")


def test_decide_respects_age_and_the_ready_guard() -> None:
    rng = random.Random(1)
    chaos = Chaos(enabled=True, min_pod_age_seconds=60, min_ready=1)
    assert decide([facts("a", age=10)], chaos, rng).reason.startswith("no pod is older")
    assert decide([facts("a")], chaos, rng).reason == "only 1 ready instance(s); minReady is 1"
    two = decide([facts("a"), facts("b")], chaos, rng)
    assert two.victim is not None and two.ready == 2
    # An unready pod may go: its loss leaves the ready count as it is.
    assert decide([facts("a"), facts("b", ready=False)], chaos, rng).victim == facts("b", ready=False)
    assert decide([facts("a"), facts("b", terminating=True)], chaos, rng).victim is None


def test_delays_are_exponential_capped_and_reproducible() -> None:
    draws = [next_delay(random.Random("uid"), 10) for _ in range(3)]
    assert len(set(draws)) == 1
    many = [next_delay(random.Random(i), 10) for i in range(2000)]
    assert max(many) <= 50 and 8 < sum(many) / len(many) < 11


class Cluster:
    """An Architecture with one Deployment of `webserver` and its pods, plus a look-alike."""

    def __init__(self, kube: Any, ready_pods: int = 3) -> None:
        self.kube = kube
        self.clock = NOW + timedelta(hours=1)
        kube.add({"apiVersion": "simiankube.io/v1alpha1", "kind": "Architecture",
                  "metadata": {"name": "lamp", "namespace": "demo", "uid": OWNER.uid}, "status": {}})
        deployment = kube.add({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "lamp-webserver", "namespace": "demo", "uid": "deploy-uid", "labels": LABELS,
                         "annotations": {contract.ANNOTATION_SPIGO_NAME: "webserver"},
                         "ownerReferences": [{"kind": "Architecture", "name": "lamp", "uid": OWNER.uid,
                                              "controller": True}]},
            "spec": {"replicas": ready_pods}, "status": {"readyReplicas": ready_pods}})
        self.view = WorkloadView()
        self.view.update("ADDED", deployment)
        kube.add({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
            "name": "lamp-webserver-abc", "namespace": "demo", "uid": "rs-uid",
            "ownerReferences": [{"kind": "Deployment", "name": "lamp-webserver", "uid": "deploy-uid",
                                 "controller": True}]}})
        kube.add({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
            "name": "impostor", "namespace": "demo", "uid": "impostor-rs"}})
        for i in range(ready_pods):
            self.pod(f"lamp-webserver-abc-{i}", "lamp-webserver-abc", "rs-uid")
        self.pod("look-alike", "impostor", "impostor-rs")
        self.keeper = StatusKeeper(kube, 0)
        self.events: list[tuple[str, str, str]] = []
        self.metrics = Metrics()
        self.controller = ChaosController(kube, self.keeper, self.metrics,
                                          lambda owner, t, r, m: self.events.append((t, r, m)), lambda: self.clock)

    def pod(self, name: str, rs: str, rs_uid: str) -> None:
        self.kube.add({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": name, "namespace": "demo", "uid": f"uid-{name}", "labels": LABELS,
            "creationTimestamp": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ownerReferences": [{"kind": "ReplicaSet", "name": rs, "uid": rs_uid, "controller": True}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})

    def body(self, **chaos: Any) -> dict[str, Any]:
        spec = {"victim": "webserver", "chaos": {"enabled": True, "intervalSeconds": 1, **chaos}, "services": [
            {"name": "webserver", "package": "monolith", "count": 3, "regions": 1, "dependencies": []}]}
        return {"apiVersion": "simiankube.io/v1alpha1", "kind": "Architecture", "spec": spec,
                "metadata": {"name": "lamp", "namespace": "demo", "uid": OWNER.uid}, "status": {}}

    def pod_names(self) -> set[str]:
        return {name for (kind, _, name) in self.kube.objects if kind == "Pod"}

    async def sleep_and_replace(self, seconds: float) -> bool:
        """Time passes; the ReplicaSet replaces a lost pod after the first second."""
        self.clock += timedelta(seconds=seconds)
        if len(self.pod_names() - {"look-alike"}) < 3:
            self.pod("lamp-webserver-abc-new", "lamp-webserver-abc", "rs-uid")
        return False


async def test_a_kill_deletes_one_owned_pod_and_records_the_recovery(kube: Any) -> None:
    cluster = Cluster(kube)
    body = cluster.body()
    assert await cluster.controller.round(OWNER, parse_body(body), cluster.view, random.Random(0), cluster.sleep_and_replace, body)
    deleted = [name for verb, kind, name in kube.writes if verb == "delete"]
    assert len(deleted) == 1 and deleted[0].startswith("lamp-webserver-abc-")
    assert "look-alike" in cluster.pod_names()
    chaos = kube.objects[("Architecture", "demo", "lamp")]["status"]["chaos"]
    assert chaos["kills"] == 1 and chaos["lastKill"]["pod"] == deleted[0]
    assert chaos["lastRecoverySeconds"] == 1.0
    assert [reason for _, reason, _ in cluster.events] == ["Killing", "Recovered"]
    sample = cluster.metrics.registry.get_sample_value(
        "simiankube_chaos_pods_deleted_total", {"namespace": "demo", "architecture": "lamp", "service": "webserver"})
    assert sample == 1


async def test_a_kill_is_counted_before_the_delete_so_max_kills_holds_across_crashes(kube: Any) -> None:
    cluster = Cluster(kube)
    body = cluster.body(maxKills=1)

    async def crash(*_: Any, **__: Any) -> bool:
        raise RuntimeError("the operator died here")

    kube.evict = crash
    with pytest.raises(RuntimeError):
        await cluster.controller.round(OWNER, parse_body(body), cluster.view, random.Random(0),
                                       cluster.sleep_and_replace, body)
    status = kube.objects[("Architecture", "demo", "lamp")]["status"]
    assert status["chaos"]["kills"] == 1, "a restarted operator must see the kill it may have made"


async def test_a_victim_gone_by_itself_is_not_counted(kube: Any) -> None:
    cluster = Cluster(kube)
    body = cluster.body()

    async def gone(*_: Any, **__: Any) -> str:
        return "gone"

    kube.evict = gone
    assert await cluster.controller.round(OWNER, parse_body(body), cluster.view, random.Random(0),
                                          cluster.sleep_and_replace, body)
    chaos = kube.objects[("Architecture", "demo", "lamp")]["status"]["chaos"]
    assert chaos["kills"] == 0 and "went away by itself" in chaos["lastOutcome"]


async def test_a_pod_disruption_budget_that_forbids_it_is_respected(kube: Any) -> None:
    cluster = Cluster(kube)
    body = cluster.body()

    async def blocked(*_: Any, **__: Any) -> str:
        return "blocked: HTTP 429: Cannot evict pod as it would violate the pod's disruption budget."

    kube.evict = blocked
    assert await cluster.controller.round(OWNER, parse_body(body), cluster.view, random.Random(0),
                                          cluster.sleep_and_replace, body)
    chaos = kube.objects[("Architecture", "demo", "lamp")]["status"]["chaos"]
    assert chaos["kills"] == 0 and "PodDisruptionBudget forbids it" in chaos["lastOutcome"]
    assert len(cluster.pod_names()) == 4 and not [e for e in cluster.events if e[1] == "Killing"]


async def test_the_look_alike_is_never_a_candidate(kube: Any) -> None:
    cluster = Cluster(kube)
    pods = await cluster.controller.owned_pods(OWNER, cluster.view, "lamp", "webserver", "webserver")
    assert sorted(p.name for p in pods) == [f"lamp-webserver-abc-{i}" for i in range(3)]


async def test_pods_of_another_deployment_or_statefulset_are_never_candidates(kube: Any) -> None:
    """The safety claim: same labels, controlled by a workload that is not this Architecture's (uid)."""
    cluster = Cluster(kube)
    kube.add({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
        "name": "other-rs", "namespace": "demo", "uid": "other-rs-uid",
        "ownerReferences": [{"kind": "Deployment", "name": "lamp-webserver", "uid": "another-deployment-uid",
                             "controller": True}]}})
    cluster.pod("other-deployments-pod", "other-rs", "other-rs-uid")
    kube.add({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "other-statefulsets-pod", "namespace": "demo", "uid": "uid-sts-pod", "labels": LABELS,
        "creationTimestamp": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ownerReferences": [{"kind": "StatefulSet", "name": "lamp-webserver", "uid": "another-statefulset-uid",
                             "controller": True}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
    pods = await cluster.controller.owned_pods(OWNER, cluster.view, "lamp", "webserver", "webserver")
    assert sorted(p.name for p in pods) == [f"lamp-webserver-abc-{i}" for i in range(3)]


async def test_dry_run_and_guards_delete_nothing(kube: Any) -> None:
    cluster = Cluster(kube, ready_pods=1)
    for body, outcome in (
        (cluster.body(dryRun=True, minReady=0), "dry run: would delete pod lamp-webserver-abc-0"),
        (cluster.body(), "skipped: only 1 ready instance(s); minReady is 1"),
        (cluster.body(minPodAgeSeconds=1e6), "skipped: no pod is older than 1e+06s"),
        (cluster.body(maxKills=2, minReady=0), None),
    ):
        if outcome is None:
            kube.objects[("Architecture", "demo", "lamp")]["status"] = {}
            cluster.keeper.forget(OWNER)
            body["status"] = {"chaos": {"kills": 2}}
            outcome = "skipped: maxKills 2 reached"
        await cluster.controller.round(OWNER, parse_body(body), cluster.view, random.Random(0), cluster.sleep_and_replace, body)
        assert kube.objects[("Architecture", "demo", "lamp")]["status"]["chaos"]["lastOutcome"] == outcome
    assert [verb for verb, _, _ in kube.writes if verb == "delete"] == []
    assert ("Normal", "DryRun", "dry run: would delete pod lamp-webserver-abc-0 of webserver") in cluster.events


async def test_the_loop_stops_when_told(kube: Any) -> None:
    cluster = Cluster(kube)
    slept: list[float] = []

    async def stop_after_first(seconds: float) -> bool:
        slept.append(seconds)
        return True

    await cluster.controller.run(cluster.body(), cluster.view, stop_after_first)
    assert len(slept) == 1 and kube.writes == []


async def test_operator_wide_switch_overrides_the_spec(kube: Any) -> None:
    for mode, outcome in (("dry-run", "dry run: would delete pod"), ("off", "skipped: chaos is off")):
        cluster = Cluster(kube)
        cluster.controller = ChaosController(kube, cluster.keeper, cluster.metrics, lambda *_: None,
                                             lambda: cluster.clock, mode)
        body = cluster.body()
        await cluster.controller.round(OWNER, parse_body(body), cluster.view, random.Random(0),
                                       cluster.sleep_and_replace, body)
        assert kube.objects[("Architecture", "demo", "lamp")]["status"]["chaos"]["lastOutcome"].startswith(outcome)
        assert [verb for verb, _, _ in kube.writes if verb == "delete"] == []


def test_excluded_weekdays_and_times_of_day_in_the_time_zone() -> None:
    chaos = Chaos(timezone="Europe/Berlin", excluded_weekdays=("Sun",), excluded_times_of_day=("22:00-08:00",))
    saturday_noon = datetime(2026, 1, 3, 11, 0, tzinfo=timezone.utc)  # 12:00 in Berlin
    assert excluded(chaos, saturday_noon) == ""
    assert excluded(chaos, datetime(2026, 1, 3, 21, 30, tzinfo=timezone.utc)) == \
        "22:30 is in the excluded window 22:00-08:00 (Europe/Berlin)"
    assert excluded(chaos, datetime(2026, 1, 3, 6, 59, tzinfo=timezone.utc)).startswith("07:59 is in")
    assert excluded(chaos, datetime(2026, 1, 3, 7, 0, tzinfo=timezone.utc)) == ""  # 08:00: the window ended
    assert excluded(chaos, datetime(2026, 1, 3, 23, 0, tzinfo=timezone.utc)) == "Sun is excluded (Europe/Berlin)"
    assert excluded(Chaos(excluded_times_of_day=("09:00-17:00",)), saturday_noon).startswith("11:00 is in")


async def test_no_kill_in_an_excluded_window(kube: Any) -> None:
    cluster = Cluster(kube)
    weekday = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[cluster.clock.weekday()]
    body = cluster.body(excludedWeekdays=[weekday])
    assert await cluster.controller.round(OWNER, parse_body(body), cluster.view, random.Random(0),
                                          cluster.sleep_and_replace, body)
    assert [verb for verb, _, _ in kube.writes if verb == "delete"] == []
    outcome = kube.objects[("Architecture", "demo", "lamp")]["status"]["chaos"]["lastOutcome"]
    assert outcome == f"skipped: {weekday} is excluded (UTC)"
