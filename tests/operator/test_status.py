"""Status building, condition transitions and merge patches: pure functions."""

from __future__ import annotations

import json
from typing import Any

from simiankube.operator.status import (
    NOT_READY_ITEMS,
    WorkloadState,
    build_status,
    condition,
    merge_patch,
    set_condition,
    transition_events,
)


def workload(service: str, desired: int, ready: int, *, updated: int | None = None, observed: bool = True,
             name: str = "") -> WorkloadState:
    return WorkloadState("Deployment", "demo", name or service, f"uid-{service}", "lamp", "arch-uid", service,
                         desired, ready, desired if updated is None else updated, observed)


def statuses(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_all_ready_is_ready_and_nothing_else() -> None:
    status = build_status({}, [workload("web", 3, 3), workload("db", 1, 1)], now="T1", generation=2,
                          desired={"web": 3, "db": 1}, problems=[])
    assert statuses(status) == {"Ready": "True", "Progressing": "False", "Degraded": "False", "Invalid": "False"}
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Progressing", "Degraded", "Invalid"]
    assert (status["instances"], status["readyInstances"], status["serviceCount"]) == (4, 4, 2)
    assert (status["notReadyServices"], status["notReady"]) == (0, {})
    assert status["observedGeneration"] == 2
    assert all(c["observedGeneration"] == 2 for c in status["conditions"])


def test_rollout_is_progressing_then_a_lost_pod_is_degraded() -> None:
    rolling = build_status({}, [workload("web", 3, 1, updated=1)], now="T1", generation=1, desired={"web": 3},
                           problems=[])
    assert statuses(rolling)["Progressing"] == "True" and statuses(rolling)["Ready"] == "False"
    assert statuses(rolling)["Degraded"] == "False"
    missing = build_status({}, [], now="T1", generation=1, desired={"web": 3}, problems=[])
    assert statuses(missing)["Progressing"] == "True", "a workload not seen yet is still rolling out"
    lost = build_status(rolling, [workload("web", 3, 2)], now="T2")
    assert statuses(lost) == {"Ready": "False", "Progressing": "False", "Degraded": "True", "Invalid": "False"}
    assert "web 2/3" in (condition(lost, "Degraded") or {})["message"]


def test_invalid_spec_keeps_what_runs_and_lists_every_problem() -> None:
    good = build_status({}, [workload("web", 3, 3)], now="T1", generation=1, desired={"web": 3}, problems=[])
    bad = build_status(good, [workload("web", 3, 3)], now="T2", generation=2, problems=["a: wrong", "b: wrong"])
    invalid = condition(bad, "Invalid") or {}
    assert invalid["status"] == "True" and invalid["reason"] == "SpecInvalid"
    assert "a: wrong" in invalid["message"] and "b: wrong" in invalid["message"]
    assert bad["readyInstances"] == good["readyInstances"] == 3 and bad["observedGeneration"] == 2
    assert (condition(bad, "Ready") or {})["reason"] == "SpecInvalid"
    # A workload event afterwards keeps the Invalid condition as it is.
    later = build_status(bad, [workload("web", 3, 3)], now="T3")
    assert condition(later, "Invalid") == invalid


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = set_condition([], "Ready", False, "NotYet", "0/1", 1, "T1")
    same = set_condition(first, "Ready", False, "NotYet", "still 0/1", 1, "T2")
    flipped = set_condition(same, "Ready", True, "Done", "1/1", 1, "T3")
    assert same[0]["lastTransitionTime"] == "T1"
    assert flipped[0]["lastTransitionTime"] == "T3"


def test_rebuilding_from_the_same_facts_is_a_fixed_point() -> None:
    facts = [workload("web", 3, 3)]
    status = build_status({"chaos": {"kills": 2}}, facts, now="T1", generation=1, desired={"web": 3}, problems=[])
    again = build_status(status, facts, now="T9", generation=1, desired={"web": 3}, problems=[])
    assert merge_patch(status, again) == {}
    assert again["chaos"] == {"kills": 2}


def test_merge_patch_sets_changes_and_nulls_removals() -> None:
    old = {"services": {"a": {"ready": 1}, "b": {"ready": 2}}, "instances": 3, "conditions": [1]}
    new = {"services": {"a": {"ready": 2}}, "instances": 3, "conditions": [1, 2]}
    assert merge_patch(old, new) == {"services": {"a": {"ready": 2}, "b": None}, "conditions": [1, 2]}


def test_events_for_condition_flips() -> None:
    ready = build_status({}, [workload("web", 2, 2)], now="T1", generation=1, desired={"web": 2}, problems=[])
    assert [e[1] for e in transition_events({}, ready)] == ["Ready"]
    degraded = build_status(ready, [workload("web", 2, 1)], now="T2")
    assert [e[:2] for e in transition_events(ready, degraded)] == [("Warning", "Degraded")]
    restored = build_status(degraded, [workload("web", 2, 2)], now="T3")
    assert sorted(e[1] for e in transition_events(degraded, restored)) == ["Ready", "Restored"]
    assert transition_events(restored, restored) == []


def test_a_failed_reconcile_is_reconciled_false_with_its_reason_and_ready_false() -> None:
    ok = build_status({}, [workload("web", 1, 1)], now="T1", generation=1, desired={"web": 1}, problems=[],
                      failure=("", ""))
    assert statuses(ok)["Reconciled"] == "True" and (condition(ok, "Reconciled") or {})["reason"] == "Applied"
    failed = build_status(ok, [workload("web", 1, 1)], now="T2", generation=2,
                          failure=("Forbidden", "HTTP 403: deployments.apps is forbidden"))
    reconciled = condition(failed, "Reconciled") or {}
    assert (reconciled["status"], reconciled["reason"], reconciled["lastTransitionTime"]) == ("False", "Forbidden", "T2")
    assert "403" in reconciled["message"]
    ready = condition(failed, "Ready") or {}
    assert (ready["status"], ready["reason"]) == ("False", "Forbidden")
    # A workload event keeps the failure until a reconcile succeeds.
    assert statuses(build_status(failed, [workload("web", 1, 1)], now="T3"))["Ready"] == "False"
    healed = build_status(failed, [workload("web", 1, 1)], now="T4", generation=2, failure=("", ""))
    assert statuses(healed)["Ready"] == "True" and statuses(healed)["Reconciled"] == "True"


def test_observed_generation_never_goes_backwards() -> None:
    newer = build_status({}, [workload("web", 1, 1)], now="T1", generation=5, desired={"web": 1}, problems=[])
    assert build_status(newer, [workload("web", 1, 1)], now="T2", generation=4)["observedGeneration"] == 5


def test_a_1000_service_status_names_only_the_first_services_short_of_ready_instances() -> None:
    desired = {f"s{i:04}": 2 for i in range(1000)}
    workloads = [workload(name, 2, 2 if i % 3 else 1) for i, name in enumerate(desired)]
    status = build_status({}, workloads, now="T1", generation=1, desired=desired, problems=[])
    short = sorted(name for i, name in enumerate(desired) if not i % 3)
    assert status["notReadyServices"] == len(short) == 334
    assert status["notReady"] == {name: {"desired": 2, "ready": 1} for name in short[:NOT_READY_ITEMS]}
    assert (status["instances"], status["readyInstances"]) == (2000, 2000 - 334)
    assert len(json.dumps(status)) < 4000, "rewritten whole on every write: a few kB, not one entry per service"


def test_the_per_service_counts_of_an_older_operator_are_dropped() -> None:
    old = {"services": {"web": {"desired": 3, "ready": 3}}, "chaos": {"kills": 1}}
    status = build_status(old, [workload("web", 3, 3)], now="T1")
    assert "services" not in status and merge_patch(old, status)["services"] is None
    assert status["chaos"] == {"kills": 1} and status["instances"] == 3, "desired from the running workloads"
