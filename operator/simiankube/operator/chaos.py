"""The chaos controller: the simian army of one Architecture.

Between kills it waits an exponential draw with mean ``intervalSeconds``
(capped at five means so tests and demos never wait forever), from an RNG
seeded with the Architecture's uid, so a run is reproducible. A victim pod
must carry the architecture's and the victim service's labels AND be
controlled by one of this Architecture's workloads (Pod → ReplicaSet →
Deployment, or Pod → StatefulSet, each link checked by uid); a look-alike
pod is never touched. It must be older than ``minPodAgeSeconds``, and the
kill must leave at least ``minReady`` ready instances of the service, and
it is an eviction: a PodDisruptionBudget that forbids it is respected. After
a kill the controller measures the recovery: seconds until the service has
as many ready instances as before the kill.
"""

from __future__ import annotations

import random
import zoneinfo
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Protocol

from simiankube import contract
from simiankube.operator.metrics import Metrics
from simiankube.operator.reconcile import Owner, parse_body
from simiankube.operator.tracking import StatusKeeper, WorkloadView
from simiankube.model.spec import WEEKDAYS, Architecture, Chaos, SpecError, parse_time_window

# Stop measuring a recovery that never completes; the next kill waits for it.
RECOVERY_TIMEOUT_SECONDS = 600.0
RECOVERY_POLL_SECONDS = 1.0
MAX_DELAY_FACTOR = 5.0
CHAOS_MODES = ("on", "dry-run", "off")  # the operator-wide switch (Helm value chaos.mode)

Sleep = Callable[[float], Awaitable[bool]]  # sleeps; True when the controller must stop
Announce = Callable[[Owner, str, str, str], None]  # (owner, type, reason, message) → an Event
Clock = Callable[[], datetime]


class PodClient(Protocol):
    async def list_objects(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def evict(self, namespace: str, name: str, uid: str, grace_seconds: int) -> str: ...


@dataclass(frozen=True)
class PodFacts:
    name: str
    uid: str
    ready: bool
    terminating: bool
    age_seconds: float
    controller_kind: str
    controller_name: str
    controller_uid: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any], now: datetime) -> PodFacts:
        meta = body["metadata"]
        status = body.get("status") or {}
        ready = status.get("phase") == "Running" and any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
        )
        created = datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00"))
        controller: Mapping[str, Any] = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), {})
        return cls(
            name=meta["name"],
            uid=meta["uid"],
            ready=ready,
            terminating=bool(meta.get("deletionTimestamp")),
            age_seconds=(now - created).total_seconds(),
            controller_kind=controller.get("kind", ""),
            controller_name=controller.get("name", ""),
            controller_uid=controller.get("uid", ""),
        )


@dataclass(frozen=True)
class Decision:
    victim: PodFacts | None
    ready: int  # ready instances of the service before the kill
    reason: str  # why nobody is killed (empty when someone is)


def decide(pods: Sequence[PodFacts], chaos: Chaos, rng: random.Random) -> Decision:
    """Pick a victim among owned pods, or say why none may die now."""
    alive = [p for p in pods if not p.terminating]
    ready = sum(p.ready for p in alive)
    old = sorted((p for p in alive if p.age_seconds >= chaos.min_pod_age_seconds), key=lambda p: p.name)
    if not old:
        return Decision(None, ready, f"no pod is older than {chaos.min_pod_age_seconds:g}s")
    allowed = [p for p in old if ready - p.ready >= chaos.min_ready]
    if not allowed:
        return Decision(None, ready, f"only {ready} ready instance(s); minReady is {chaos.min_ready}")
    return Decision(rng.choice(allowed), ready, "")


def excluded(chaos: Chaos, now: datetime) -> str:
    """Why no pod may die at ``now`` (an excluded weekday or time of day, local to chaos.timezone), or ""."""
    local = now.astimezone(zoneinfo.ZoneInfo(chaos.timezone))
    day = WEEKDAYS[local.weekday()]
    if day in chaos.excluded_weekdays:
        return f"{day} is excluded ({chaos.timezone})"
    minute = local.hour * 60 + local.minute
    for window in chaos.excluded_times_of_day:
        start, end = parse_time_window(window) or (0, 0)
        if (start <= minute < end) if start <= end else (minute >= start or minute < end):
            return f"{local:%H:%M} is in the excluded window {window} ({chaos.timezone})"
    return ""


def next_delay(rng: random.Random, mean: float) -> float:
    return min(rng.expovariate(1.0 / mean), MAX_DELAY_FACTOR * mean)


def victim_service(arch: Architecture) -> str:
    """The spigo name of the service to attack ("" when the architecture names none)."""
    return arch.chaos.victim or arch.victim


class ChaosController:
    """Runs the kill loop of one Architecture until told to stop."""

    def __init__(self, kube: PodClient, keeper: StatusKeeper, metrics: Metrics,
                 announce: Announce, clock: Clock, mode: str = "on") -> None:
        self._kube = kube
        self._keeper = keeper
        self._metrics = metrics
        self._announce = announce
        self._clock = clock
        self._mode = mode

    async def run(self, body: Mapping[str, Any], view: WorkloadView, sleep: Sleep) -> None:
        """``body`` is a live view: every round reads the latest spec."""
        meta = body["metadata"]
        owner = Owner(meta["namespace"], meta["name"], meta["uid"])
        rng = random.Random(owner.uid)
        while True:
            try:
                arch = parse_body(body)
            except SpecError:
                arch = None  # the reconcile reports it; keep the rhythm and look again
            interval = arch.chaos.interval_seconds if arch else Chaos().interval_seconds
            if await sleep(next_delay(rng, interval)):
                return
            if arch is None or not arch.chaos.enabled:
                continue
            if not await self.round(owner, arch, view, rng, sleep, body):
                return

    async def round(self, owner: Owner, arch: Architecture, view: WorkloadView, rng: random.Random,
                    sleep: Sleep, body: Mapping[str, Any]) -> bool:
        """One attempt; False when told to stop meanwhile."""
        chaos = replace(arch.chaos, dry_run=True) if self._mode == "dry-run" else arch.chaos
        service = victim_service(arch)
        kills = int((self._keeper.known(owner) or body.get("status") or {}).get("chaos", {}).get("kills", 0))
        if self._mode == "off":
            await self._outcome(owner, body, "skipped: chaos is off for this operator (--chaos=off)")
            return True
        if not service:
            await self._outcome(owner, body, "skipped: the architecture names no victim")
            return True
        if chaos.max_kills and kills >= chaos.max_kills:
            await self._outcome(owner, body, f"skipped: maxKills {chaos.max_kills} reached")
            return True
        quiet = excluded(chaos, self._clock())
        if quiet:
            await self._outcome(owner, body, f"skipped: {quiet}")
            return True
        kube_name = arch.service(service).kube_name
        pods = await self.owned_pods(owner, view, arch.resource_name, service, kube_name)
        decision = decide(pods, chaos, rng)
        if decision.victim is None:
            await self._outcome(owner, body, f"skipped: {decision.reason}")
            return True
        victim = decision.victim
        if chaos.dry_run:
            self._announce(owner, "Normal", "DryRun", f"dry run: would delete pod {victim.name} of {service}")
            await self._outcome(owner, body, f"dry run: would delete pod {victim.name}")
            return True
        killed_at = self._clock()
        # Counted before the eviction: an operator that dies between the two has counted a kill that did not
        # happen, never killed one it did not count, so maxKills holds across crashes.
        last_kill = {"pod": victim.name, "service": service, "time": _rfc3339(killed_at)}
        await self._keeper.update(owner, lambda s: _with_chaos(
            s, kills=kills + 1, lastKill=last_kill, lastOutcome=f"deleting pod {victim.name}"), body.get("status"))
        # An eviction, not a delete: a PodDisruptionBudget that forbids it now is respected.
        result = await self._kube.evict(owner.namespace, victim.name, victim.uid, chaos.grace_period_seconds)
        if result != "evicted":
            why = "went away by itself" if result == "gone" else f"a PodDisruptionBudget forbids it ({result})"
            await self._keeper.update(owner, lambda s: _with_chaos(
                s, kills=kills, lastOutcome=f"skipped: pod {victim.name} {why}"))
            return True
        await self._keeper.update(owner, lambda s: _with_chaos(s, lastOutcome=f"deleted pod {victim.name}"))
        self._metrics.pods_deleted.labels(owner.namespace, owner.name, service).inc()
        self._announce(owner, "Normal", "Killing",
                       f"chaos: deleted pod {victim.name} of {service} ({decision.ready} ready before)")
        recovered = await self.await_recovery(owner, view, arch.resource_name, service, kube_name, victim.uid,
                                              decision.ready, sleep)
        if recovered is None:
            return False
        seconds = round((self._clock() - killed_at).total_seconds(), 3)
        if recovered:
            self._metrics.recovery_seconds.labels(owner.namespace, owner.name, service).observe(seconds)
            self._announce(owner, "Normal", "Recovered", f"chaos: {service} recovered in {seconds}s after "
                                                         f"losing {victim.name}")
            await self._keeper.update(owner, lambda s: _with_chaos(s, lastRecoverySeconds=seconds))
        else:
            self._announce(owner, "Warning", "NotRecovered",
                           f"chaos: {service} not recovered {RECOVERY_TIMEOUT_SECONDS:g}s after losing {victim.name}")
        return True

    async def owned_pods(self, owner: Owner, view: WorkloadView, resource_name: str, service: str,
                         kube_name: str) -> list[PodFacts]:
        """The service's pods whose controller chain leads to this Architecture, by uid."""
        selector = f"{contract.LABEL_ARCHITECTURE}={resource_name},{contract.LABEL_SERVICE}={kube_name}"
        now = self._clock()
        pods = [PodFacts.from_body(p, now) for p in await self._kube.list_objects("Pod", owner.namespace, selector)]
        workloads = [w for w in view.owned(owner) if w.service == service]
        sets = {w.uid for w in workloads if w.kind == "StatefulSet"}
        deployments = {w.uid for w in workloads if w.kind == "Deployment"}
        replica_sets: dict[str, bool] = {}
        owned = []
        for pod in pods:
            if pod.controller_kind == "StatefulSet":
                if pod.controller_uid in sets:
                    owned.append(pod)
            elif pod.controller_kind == "ReplicaSet":
                if pod.controller_uid not in replica_sets:
                    replica_sets[pod.controller_uid] = await self._replica_set_owned(
                        owner.namespace, pod.controller_name, pod.controller_uid, deployments)
                if replica_sets[pod.controller_uid]:
                    owned.append(pod)
        return owned

    async def _replica_set_owned(self, namespace: str, name: str, uid: str, deployments: set[str]) -> bool:
        replica_set = await self._kube.get("ReplicaSet", namespace, name)
        if replica_set is None or replica_set["metadata"]["uid"] != uid:
            return False
        refs = replica_set["metadata"].get("ownerReferences") or []
        return any(r.get("controller") and r.get("kind") == "Deployment" and r.get("uid") in deployments
                   for r in refs)

    async def await_recovery(self, owner: Owner, view: WorkloadView, resource_name: str, service: str,
                             kube_name: str,
                             killed_uid: str, ready_before: int, sleep: Sleep) -> bool | None:
        """True once as many instances are ready as before; False on timeout; None when stopped."""
        waited = 0.0
        while waited < RECOVERY_TIMEOUT_SECONDS:
            if await sleep(RECOVERY_POLL_SECONDS):
                return None
            waited += RECOVERY_POLL_SECONDS
            pods = await self.owned_pods(owner, view, resource_name, service, kube_name)
            ready = sum(p.ready for p in pods if not p.terminating and p.uid != killed_uid)
            if ready >= ready_before:
                return True
        return False

    async def _outcome(self, owner: Owner, body: Mapping[str, Any], outcome: str) -> None:
        await self._keeper.update(owner, lambda s: _with_chaos(s, lastOutcome=outcome), body.get("status"))


def _with_chaos(status: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    return {**status, "chaos": {**(status.get("chaos") or {}), **fields}}


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
