"""The operator's services behind the kopf handlers.

One ``Controller`` is created at startup and shared through ``memo``; it
owns the API client, the metrics, the workload view, the status keeper, the
chaos controller and the segmentation verifier, and maps domain errors to
kopf's retry policy: an invalid spec is reported (condition + Warning Event)
and not retried; a rendered name another owner holds (AlreadyOwned) or a
failed API call (403, 422, a conflict, ...) sets ``Reconciled=False`` with the
reason, posts a Warning Event and is retried with backoff (TemporaryError).

Every watch the operator holds on its children is its own, filtered by
label on the server (only this operator's objects): its Deployments and
StatefulSets fill the workload view (readiness → status, Events on status
changes, chaos), every child kind feeds drift repair. A child edited or deleted by
hand, and every Architecture once per ``resync_seconds``, gets a repair: a
reconcile of its owner, retried with backoff until it succeeds. Reconciles
of one Architecture never run concurrently (one lock per Architecture).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, cast

import kopf
from aiohttp import web

from simiankube import contract
from simiankube.operator import metrics as metrics_module
from simiankube.operator.chaos import ChaosController, Sleep
from simiankube.operator.kube import CHILD_KINDS, Kube, KubeError, Object
from simiankube.operator.leader import LeaseTerms, keep, release
from simiankube.operator.metrics import Metrics
from simiankube.operator.reconcile import AlreadyOwned, Owner, reconcile
from simiankube.operator.segmentation import SegmentationVerifier
from simiankube.operator.status import Status, build_status, running_desired, transition_events
from simiankube.operator.tracking import Change, StatusKeeper, WorkloadView
from simiankube.render import PodResources, RenderSettings
from simiankube.model.spec import SpecError

RETRY_DELAY_SECONDS = 10.0
RETRY_DELAY_MAX_SECONDS = 300.0
REPAIR_DELAY_SECONDS = 1.0  # child events within this window make one repair
REPAIR_BACKOFF_MAX_SECONDS = 60.0
WATCH_BACKOFF_MAX_SECONDS = 30.0
# Only this operator's children, filtered by the API server.
CHILD_SELECTOR = f"{contract.LABEL_ARCHITECTURE},{contract.LABEL_MANAGED_BY}={contract.MANAGED_BY}"
API_ERROR_REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
                     422: "Unprocessable", 429: "Throttled"}
# Kinds whose objects the workload view keeps (readiness), besides drift repair.
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
CRD_POLL_SECONDS = 2.0
CRD_LOG_SECONDS = 15.0
log = logging.getLogger(__name__)


class NotServed(Exception):
    """The Architecture CRD is not served: the operator exits so that its pod restarts."""


@dataclass(frozen=True)
class OperatorConfig:
    """How one operator process runs (from the command line or the chart's values)."""

    namespaces: tuple[str, ...] = ()  # watched namespaces; empty = all namespaces
    metrics_port: int = 8000  # Prometheus /metrics; 0 disables it
    liveness: str = ""  # kopf's health endpoint, e.g. http://0.0.0.0:8080/healthz; "" disables it
    nanoservice_image: str = RenderSettings.image  # image of every rendered pod
    nanoservice_resources: PodResources = PodResources()  # requests/limits of every rendered pod
    field_manager: str = contract.MANAGED_BY  # the one server-side-apply field manager
    apply_concurrency: int = 16  # parallel applies within one kind (1,000 services in seconds, not minutes)
    status_delay_seconds: float = 1.0  # workload events within this window make one status write
    # on | dry-run | off: an operator-wide switch over every spec.chaos. Dry-run by default, as
    # chaoskube: killing pods is opted into (--chaos=on, Helm value chaos.mode=on).
    chaos_mode: str = "dry-run"
    # How long startup waits for the CRD to be served before exiting non-zero (below the chart's
    # liveness budget of ~70 s, so the clear message, not the probe, ends the pod).
    crd_timeout_seconds: float = 60.0
    # Every Architecture is reconciled again this often: the last safety net. Hand edits are noticed on
    # the watches at once, and a watch that broke off repairs every Architecture when it starts again;
    # a resync lists every child (5,000 objects for 1,000 services), so it is not frequent.
    resync_seconds: float = 600.0
    verification: bool = True  # periodic segmentation verification (needs pods/proxy)
    lease: LeaseTerms | None = None  # leader election (several replicas); None: this is the only one


def now() -> datetime:
    return datetime.now(timezone.utc)


def rfc3339() -> str:
    return now().strftime("%Y-%m-%dT%H:%M:%SZ")


def owner_of(body: Mapping[str, Any]) -> Owner:
    meta = body["metadata"]
    return Owner(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


def retry_delay(retry: int) -> float:
    """Backoff for kopf's retries of one failing reconcile: 10 s, 20 s, 40 s, ... at most 5 minutes."""
    return float(min(RETRY_DELAY_SECONDS * 2 ** min(retry, 10), RETRY_DELAY_MAX_SECONDS))


def controlling_architecture(body: Mapping[str, Any]) -> Owner | None:
    meta = body.get("metadata") or {}
    ref = next((r for r in meta.get("ownerReferences") or []
                if r.get("controller") and r.get("kind") == contract.KIND), None)
    return Owner(str(meta.get("namespace", "")), str(ref["name"]), str(ref["uid"])) if ref else None


def announce(owner: Owner, type_: str, reason: str, message: str) -> None:
    """An Event on the Architecture (kopf posts it in the background)."""
    reference = cast(kopf.RawBody, owner.object_reference)
    try:
        kopf.event(kopf.Body(reference), type=type_, reason=reason, message=message[:1024])
    except LookupError:  # outside every kopf task's context: kopf has no queue to post to
        log.warning("Event %s not posted for %s/%s: %s", reason, owner.namespace, owner.name, message)


class Controller:
    def __init__(self, config: OperatorConfig, kube: Kube, metrics: Metrics,
                 metrics_runner: web.AppRunner | None, view: WorkloadView) -> None:
        self.config = config
        self.kube = kube
        self.metrics = metrics
        self.view = view
        self._metrics_runner = metrics_runner
        self.keeper = StatusKeeper(kube, config.status_delay_seconds)
        self.chaos = ChaosController(kube, self.keeper, metrics, announce, now, config.chaos_mode)
        self.segmentation = SegmentationVerifier(kube, self.keeper, metrics, announce, now)
        self._locks: dict[str, asyncio.Lock] = {}  # owner uid → one reconcile at a time
        self._generations: dict[str, int] = {}  # owner uid → the newest generation reconciled
        self._desired: dict[str, dict[str, int]] = {}  # owner uid → instances per service of its last valid spec
        self._known: dict[str, Owner] = {}  # every Architecture seen: the periodic resync's list
        self._dirty: set[str] = set()  # owner uids with a repair due
        self._repairs: dict[str, asyncio.Task[None]] = {}
        self._seen: dict[str, str] = {}  # child uid → its generation (else resourceVersion) last seen
        self._tasks: list[asyncio.Task[None]] = []
        self._listed: dict[tuple[str, str | None], asyncio.Event] = {}  # workload watches that listed once
        # kopf posts Events through a queue it sets in the context of its own tasks: repairs run in
        # a copy of a handler's context so that their Events are posted too.
        self._kopf_context: contextvars.Context | None = None

    @classmethod
    async def start(cls, config: OperatorConfig) -> Controller:
        metrics = Metrics()
        kube = await Kube.connect(config.field_manager, metrics.count_write)
        runner = await metrics_module.serve(metrics, config.metrics_port) if config.metrics_port else None
        return cls(config, kube, metrics, runner, WorkloadView())

    def hold_lease(self) -> None:
        """Renew the Lease this replica acquired before kopf started; exit the process if it is lost."""
        if self.config.lease is not None:
            self._tasks.append(asyncio.create_task(keep(self.kube, self.config.lease, now)))

    def watch_children(self) -> None:
        """Watch every child kind (server-side label selector) and resync periodically, in the background."""
        for kind in CHILD_KINDS:
            for namespace in self.config.namespaces or (None,):
                if kind in WORKLOAD_KINDS:
                    self._listed[(kind, namespace)] = asyncio.Event()
                self._tasks.append(asyncio.create_task(self._watch(kind, namespace)))
        self._tasks.append(asyncio.create_task(self._resync()))

    async def wait_until_listed(self, timeout: float) -> None:
        """Return once every workload watch has listed its workloads; raise NotServed after ``timeout`` s.

        Before any Architecture handler runs: a status rebuilt from a partial
        view would flap (and write) on every restart.
        """
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self._listed.values())), timeout)
        except TimeoutError:
            missing = sorted(f"{kind} in {ns or 'all namespaces'}"
                             for (kind, ns), event in self._listed.items() if not event.is_set())
            raise NotServed(f"could not list this operator's workloads after {timeout:g} s: {', '.join(missing)} "
                            "(see the watch warnings above)") from None

    async def wait_until_served(self, timeout: float) -> None:
        """Return once the API server serves Architectures; raise NotServed after ``timeout`` seconds.

        kopf discovers its resources once, right after startup: an operator
        started before its CRD would otherwise never serve Architectures.
        """
        started = time.monotonic()
        logged = -CRD_LOG_SECONDS
        problem = "not in the API server's discovery"
        while True:
            try:
                if await self.kube.serves(contract.KIND):
                    return
            except KubeError as err:
                problem = f"discovery failed: {err}"
            waited = time.monotonic() - started
            if waited >= timeout:
                raise NotServed(
                    f"the CRD {contract.PLURAL}.{contract.API_GROUP} is not served ({problem}) after {timeout:g} s: "
                    "install crds/architecture.yaml (the Helm chart's crds/) and the operator serves it on restart")
            if waited - logged >= CRD_LOG_SECONDS:
                log.warning("waiting for the CRD %s.%s to be served (%s); giving up after %g s",
                            contract.PLURAL, contract.API_GROUP, problem, timeout)
                logged = waited
            await asyncio.sleep(CRD_POLL_SECONDS)

    async def release_finalizers(self, finalizer: str) -> None:
        """On shutdown: nothing stays stuck Terminating behind an operator that is gone (helm uninstall first).

        kopf holds the finalizer only so it can stop the chaos and verification
        daemons, which are stopped by now; a restarted operator adds it again.
        """
        for owner in list(self._known.values()):
            try:
                if await self.kube.remove_finalizer(contract.KIND, owner.namespace, owner.name, finalizer):
                    log.info("released the finalizer of %s/%s", owner.namespace, owner.name)
            except KubeError as err:
                log.warning("finalizer of %s/%s not released: %s", owner.namespace, owner.name, err)

    async def close(self) -> None:
        tasks = [*self._tasks, *self._repairs.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.keeper.close()
        if self.config.lease is not None:
            try:
                await release(self.kube, self.config.lease)  # after the last write of this replica
            except KubeError as err:
                log.warning("lease not released (the next leader waits out its term): %s", err)
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        await self.kube.close()

    async def reconcile(self, body: Mapping[str, Any], logger: logging.Logger | logging.LoggerAdapter[Any],
                        *, retry: int = 0, repair: bool = False) -> None:
        """Reconcile one Architecture, never concurrently with another reconcile of it.

        ``repair``: not a spec change but a hand edit or a resync; what is
        applied then is announced as ``Repaired``.
        """
        owner = owner_of(body)
        generation = int(body["metadata"].get("generation") or 0)
        async with self._locks.setdefault(owner.uid, asyncio.Lock()):
            if generation < self._generations.get(owner.uid, 0):
                return  # a stale body: a newer generation was reconciled already
            self._generations[owner.uid] = generation
            await self._reconcile(owner, body, generation, logger, retry, repair)

    async def _reconcile(self, owner: Owner, body: Mapping[str, Any], generation: int,
                         logger: logging.Logger | logging.LoggerAdapter[Any], retry: int, repair: bool) -> None:
        started = time.monotonic()
        try:
            outcome = await reconcile(body, self.kube, self.config.nanoservice_image, self.config.apply_concurrency,
                                      self.config.nanoservice_resources)
        except SpecError as err:
            self.metrics.reconciles.labels("invalid").inc()
            announce(owner, "Warning", "InvalidSpec", str(err))
            logger.warning("invalid spec, nothing changed: %s", err)
            # What runs is the last valid spec: after a restart, the workloads tell what it asks for.
            self._desired.setdefault(owner.uid, running_desired(self.view.owned(owner)))
            await self._write_status(owner, body, generation=generation, problems=err.problems, failure=("", ""))
            return  # not retried: the next spec change triggers the next reconcile
        except (AlreadyOwned, KubeError) as err:
            self.metrics.reconciles.labels("error").inc()
            reason = "AlreadyOwned" if isinstance(err, AlreadyOwned) else \
                API_ERROR_REASONS.get(err.status, "APIError")
            announce(owner, "Warning", reason, str(err))
            logger.warning("not reconciled (%s): %s", reason, err)
            await self._write_status(owner, body, generation=generation, failure=(reason, str(err)))
            # Retried whatever the cause: the other owner may go, RBAC or a webhook may be fixed.
            raise kopf.TemporaryError(f"{reason}: {err}", delay=retry_delay(retry)) from None
        finally:
            self.metrics.reconcile_seconds.observe(time.monotonic() - started)
        self.metrics.reconciles.labels("applied" if outcome.applied or outcome.pruned else "unchanged").inc()
        self._desired[owner.uid] = outcome.desired
        if outcome.applied and repair:
            announce(owner, "Normal", "Repaired", f"restored {outcome.applied} object(s) changed or deleted "
                     f"outside the operator: {', '.join(outcome.changed)}")
        elif outcome.applied:
            announce(owner, "Normal", "Applied",
                     f"applied {outcome.applied} object(s), {outcome.unchanged} unchanged")
        if outcome.pruned:
            announce(owner, "Normal", "Pruned", f"deleted {outcome.pruned} object(s) no longer in the spec")
        logger.info("applied %d, pruned %d, unchanged %d", outcome.applied, outcome.pruned, outcome.unchanged)
        await self._write_status(owner, body, generation=generation, problems=[], failure=("", ""))

    def _status_change(self, owner: Owner, **facts: Any) -> Change:
        """The status rebuilt from the view as it is when the keeper applies it (its lock held)."""
        return lambda previous: build_status(previous, self.view.owned(owner), now=rfc3339(),
                                             desired=self._desired.get(owner.uid), **facts)

    async def _write_status(self, owner: Owner, body: Mapping[str, Any], **facts: Any) -> None:
        try:
            result = await self.keeper.update(owner, self._status_change(owner, **facts),
                                              current=body.get("status") or {})
        except KubeError as err:
            raise kopf.TemporaryError(f"status not written: {err}", delay=RETRY_DELAY_SECONDS) from None
        if result is not None:
            self._announce_transitions(owner, *result)

    def workload_changed(self, event_type: str, body: Mapping[str, Any]) -> None:
        """Keep the workload in the view and refresh its reconciled owner's status soon (Events on flips)."""
        self.view.update(event_type, body)
        owner = controlling_architecture(body)
        # Until a reconcile (in this process) told what the Architecture asks for, the counts would be
        # of the workloads applied so far; that reconcile writes the status when it ends.
        if owner is not None and owner.uid in self._desired:
            refresh = functools.partial(self.keeper.refresh_soon, owner, self._status_change(owner),
                                        lambda previous, new: self._announce_transitions(owner, previous, new))
            if self._kopf_context is None:
                refresh()
            else:  # the refresh task inherits kopf's context, so that its Events can be posted
                self._kopf_context.copy().run(refresh)

    def child_changed(self, event_type: str, body: Mapping[str, Any]) -> None:
        """A child edited or deleted by someone: repair its owner soon.

        Workloads count as edited when their generation moves (their status
        changes all the time); other kinds on every change. Creations are ours.
        """
        owner = controlling_architecture(body)
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        mark = str(meta.get("generation") or meta.get("resourceVersion") or "")
        if event_type == "DELETED":
            self._seen.pop(uid, None)
        elif self._seen.get(uid) == mark or event_type != "MODIFIED":
            self._seen[uid] = mark
            return
        else:
            self._seen[uid] = mark
        if owner is not None:
            self.repair_soon(owner)

    def architecture_seen(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        owner = owner_of(body)
        if self._kopf_context is None:
            self._kopf_context = contextvars.copy_context()
        if event_type == "DELETED":
            self._forget(owner)
        else:
            self._known[owner.uid] = owner

    def repair_soon(self, owner: Owner) -> None:
        """Reconcile the owner again shortly, once for a burst of events, retried until it succeeds."""
        self._dirty.add(owner.uid)
        task = self._repairs.get(owner.uid)
        if task is None or task.done():
            context = self._kopf_context.copy() if self._kopf_context else None
            self._repairs[owner.uid] = asyncio.create_task(self._repair_until_done(owner), context=context)

    async def _repair_until_done(self, owner: Owner) -> None:
        delay = REPAIR_DELAY_SECONDS
        while owner.uid in self._dirty:
            await asyncio.sleep(delay)
            self._dirty.discard(owner.uid)
            try:
                await self._repair(owner)
                delay = REPAIR_DELAY_SECONDS
            except (kopf.TemporaryError, kopf.PermanentError, KubeError) as err:
                self._dirty.add(owner.uid)
                delay = min(max(2 * delay, 2.0), REPAIR_BACKOFF_MAX_SECONDS)
                log.warning("repair of %s/%s failed, again in %g s: %s", owner.namespace, owner.name, delay, err)
        self._repairs.pop(owner.uid, None)

    async def _repair(self, owner: Owner) -> None:
        """Reconcile the Architecture as it is now, while it lives (after a prune this finds nothing to do)."""
        body = await self.kube.get(contract.KIND, owner.namespace, owner.name)
        if body is None or body["metadata"]["uid"] != owner.uid or body["metadata"].get("deletionTimestamp"):
            return
        adapter = logging.LoggerAdapter(log, {})
        await self.reconcile(body, adapter, repair=True)

    async def _watch(self, kind: str, namespace: str | None) -> None:
        listed = self._listed.get((kind, namespace))

        def on_list(bodies: list[Object]) -> None:
            self.view.replace(kind, namespace, bodies)
            assert listed is not None
            listed.set()

        delay = 1.0
        while True:
            try:
                async for event_type, body in self.kube.watch(kind, namespace, CHILD_SELECTOR,
                                                              on_list if listed else None):
                    delay = 1.0
                    self.metrics.watch_events.labels(kind).inc()
                    if listed:
                        self.workload_changed(event_type, body)
                    self.child_changed(event_type, body)
            except KubeError as err:
                log.warning("watch of %s in %s: %s; again in %g s", kind, namespace or "all namespaces", err, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, WATCH_BACKOFF_MAX_SECONDS)
                self._repair_all()  # events may have been lost in the gap: a repair, once the watch is back

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.config.resync_seconds)
            self._repair_all()

    def _repair_all(self) -> None:
        for owner in list(self._known.values()):
            self.repair_soon(owner)

    def _announce_transitions(self, owner: Owner, previous: Mapping[str, Any], new: Status) -> None:
        for type_, reason, message in transition_events(previous, new):
            announce(owner, type_, reason, message)

    def _forget(self, owner: Owner) -> None:
        """Children go with the owner (garbage collection); only the memory of it is dropped."""
        self.keeper.forget(owner)
        for memory in (self._known, self._locks, self._generations, self._desired):
            memory.pop(owner.uid, None)
        self._dirty.discard(owner.uid)
        task = self._repairs.pop(owner.uid, None)
        if task is not None:
            task.cancel()

    async def run_chaos(self, body: Mapping[str, Any], sleep: Sleep) -> None:
        await self.chaos.run(body, self.view, sleep)

    async def run_verification(self, body: Mapping[str, Any], sleep: Sleep) -> None:
        await self.segmentation.run(body, sleep)
