"""Status of an Architecture, built by pure functions (API conventions).

Conditions: ``Ready`` (every desired instance ready, spec valid),
``Progressing`` (workloads still rolling out), ``Degraded`` (rolled out but
instances missing, e.g. after a chaos kill), ``Invalid`` (the last spec
had semantic errors; what runs is the last valid spec) and ``Reconciled``
(False while the last reconcile failed: a name another owner holds, an API
error such as 403/422/409; the reason says which). Each condition keeps
its ``lastTransitionTime`` until its status flips, so rebuilding a status
from the same facts yields the same document and costs no write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from simiankube import contract

Status = dict[str, Any]
CONDITION_TYPES = ("Ready", "Progressing", "Degraded", "Invalid", "Reconciled")
# Long lists of services would make `kubectl describe` unreadable.
MESSAGE_ITEMS = 8
# Services short of ready instances listed in status.notReady: enough to act on, and a status
# of a 1,000-service Architecture stays a few kB (the API server rewrites the whole object per write).
NOT_READY_ITEMS = 20
# Written by build_status; everything else in a status (chaos, segmentation, kopf) is kept.
# "services" (every service's counts) was written by older operators and is dropped.
OWN_KEYS = ("observedGeneration", "conditions", "serviceCount", "instances", "readyInstances",
            "notReadyServices", "notReady", "services")


@dataclass(frozen=True)
class WorkloadState:
    """The facts about one Deployment/StatefulSet that the status needs."""

    kind: str
    namespace: str
    name: str
    uid: str
    owner_name: str  # name of the controlling Architecture ("" when none)
    owner_uid: str  # its uid ("" when none)
    service: str  # spigo name of the service
    desired: int
    ready: int
    updated: int
    observed: bool  # the workload controller has seen the current spec

    @property
    def progressing(self) -> bool:
        return not self.observed or self.updated < self.desired

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> WorkloadState:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        labels = meta.get("labels") or {}
        owner: Mapping[str, Any] = next(
            (ref for ref in meta.get("ownerReferences") or []
             if ref.get("controller") and ref.get("kind") == contract.KIND),
            {},
        )
        return cls(
            kind=str(body.get("kind", "")),
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
            owner_name=str(owner.get("name", "")),
            owner_uid=str(owner.get("uid", "")),
            service=str((meta.get("annotations") or {}).get(contract.ANNOTATION_SPIGO_NAME)
                        or labels.get(contract.LABEL_SERVICE, "")),
            desired=int(spec.get("replicas", 1)),
            ready=int(status.get("readyReplicas") or 0),
            updated=int(status.get("updatedReplicas") or 0),
            observed=int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0),
        )


def running_desired(workloads: Iterable[WorkloadState]) -> dict[str, int]:
    """Instances per service that the workloads ask for: the desired counts when no reconcile told them."""
    desired: dict[str, int] = {}
    for workload in workloads:
        desired[workload.service] = desired.get(workload.service, 0) + workload.desired
    return desired


def service_counts(desired: Mapping[str, int], workloads: Iterable[WorkloadState]) -> dict[str, dict[str, int]]:
    """Desired and ready instances per service (spigo names), summed over regions."""
    ready = dict.fromkeys(desired, 0)
    for workload in workloads:
        if workload.service in ready:
            ready[workload.service] += workload.ready
    return {name: {"desired": desired[name], "ready": ready[name]} for name in sorted(desired)}


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """Conditions with one set; the transition time moves only when the status flips."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.get("type") == type_), None)
    changed = previous is None or previous.get("status") != value
    condition = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": now if changed else previous["lastTransitionTime"],  # type: ignore[index]
    }
    others = [dict(c) for c in conditions if c.get("type") != type_]
    return sorted([*others, condition], key=_condition_order)


def _condition_order(condition: Mapping[str, Any]) -> int:
    kind = condition.get("type", "")
    return CONDITION_TYPES.index(kind) if kind in CONDITION_TYPES else len(CONDITION_TYPES)


def condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MESSAGE_ITEMS])
    return shown + (f" and {len(items) - MESSAGE_ITEMS} more" if len(items) > MESSAGE_ITEMS else "")


def build_status(
    previous: Mapping[str, Any],
    workloads: Sequence[WorkloadState],
    *,
    now: str,
    generation: int | None = None,
    desired: Mapping[str, int] | None = None,
    problems: Sequence[str] | None = None,
    failure: tuple[str, str] | None = None,
) -> Status:
    """The whole status from the facts at hand; what is not given is kept from ``previous``.

    ``generation``, ``problems`` and ``failure`` come from a reconcile
    (``problems`` empty when the spec is valid; ``failure`` (reason, message)
    when it could not apply, ``("", "")`` when it did); a workload event passes
    only the workloads, and the spec-related facts stay as the last reconcile
    left them. ``desired`` (instances per service) comes from the last valid
    spec reconciled; without it, from what the workloads ask for. Per service,
    the status names only the first few short of ready instances: it is
    rewritten whole on every write. ``observedGeneration`` never goes backwards.
    """
    last = int(previous.get("observedGeneration") or 0)
    observed = max(generation, last) if generation is not None else last
    if desired is None:
        desired = running_desired(workloads)
    conditions: list[dict[str, Any]] = [dict(c) for c in previous.get("conditions") or []]
    if problems is not None:
        conditions = set_condition(
            conditions, "Invalid", bool(problems),
            "SpecInvalid" if problems else "SpecValid",
            f"{len(problems)} problem(s); still running the last valid spec: " + "; ".join(problems)
            if problems else "the spec is valid",
            observed, now,
        )
    if failure is not None:
        reason, message = failure
        conditions = set_condition(conditions, "Reconciled", not reason, reason or "Applied",
                                   message or "every rendered object is applied", observed, now)
    invalid = (condition({"conditions": conditions}, "Invalid") or {}).get("status") == "True"
    failed = condition({"conditions": conditions}, "Reconciled") or {}

    services = service_counts(desired, workloads)
    total = sum(c["desired"] for c in services.values())
    ready = sum(min(c["ready"], c["desired"]) for c in services.values())
    rolled_out: dict[str, int] = {}
    for workload in workloads:
        if workload.service in services:
            rolled_out[workload.service] = rolled_out.get(workload.service, 0) + workload.desired
    rolling = sorted(
        {w.service for w in workloads if w.service in services and w.progressing}
        | {name for name, counts in services.items() if rolled_out.get(name, 0) != counts["desired"]}
    )
    short = sorted(name for name, counts in services.items() if counts["ready"] < counts["desired"])
    progressing = bool(rolling)
    degraded = not progressing and bool(short)
    summary = f"{ready}/{total} instances ready"

    conditions = set_condition(
        conditions, "Progressing", progressing,
        "RollingOut" if progressing else "RolloutComplete",
        f"{summary}; rolling out: {_listing(rolling)}" if progressing else summary,
        observed, now,
    )
    conditions = set_condition(
        conditions, "Degraded", degraded,
        "InstancesUnavailable" if degraded else "AsDesired",
        f"{summary}; short of ready instances: " + _listing(
            [f"{n} {services[n]['ready']}/{services[n]['desired']}" for n in short]
        ) if degraded else summary,
        observed, now,
    )
    is_ready = not invalid and failed.get("status") != "False" and not progressing and not short
    if invalid:
        reason = "SpecInvalid"
    elif failed.get("status") == "False":
        reason = str(failed.get("reason"))
    elif is_ready:
        reason = "AllInstancesReady"
    else:
        reason = "InstancesNotReady"
    conditions = set_condition(conditions, "Ready", is_ready, reason, summary, observed, now)

    status: Status = {key: value for key, value in previous.items() if key not in OWN_KEYS}
    status.update(
        observedGeneration=observed,
        conditions=conditions,
        serviceCount=len(services),
        instances=total,
        readyInstances=ready,
        notReadyServices=len(short),
        notReady={name: services[name] for name in short[:NOT_READY_ITEMS]},
    )
    return status


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``; empty when equal."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif key not in old or before != value:
            patch[key] = value
    return patch


def transition_events(previous: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Events (type, reason, message) for condition flips a user wants to see."""
    events = []
    for type_, when, event_type, reason in (
        ("Ready", "True", "Normal", "Ready"),
        ("Degraded", "True", "Warning", "Degraded"),
        ("Degraded", "False", "Normal", "Restored"),
    ):
        before = (condition(previous, type_) or {}).get("status")
        after = condition(new, type_) or {}
        if after.get("status") == when and before != when and (before is not None or when == "True"):
            events.append((event_type, reason, str(after.get("message", ""))))
    return events
