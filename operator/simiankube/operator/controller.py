"""The operator's services behind the kopf handlers.

One ``Controller`` is created at startup and shared through ``memo``; it
owns the API client, the metrics, the workload registry, the status keeper
the chaos controller and the segmentation verifier, and maps domain errors to kopf's retry policy:
an invalid spec is reported (condition + Warning Event) and not retried, a
retryable API error is a TemporaryError, anything else a PermanentError.
"""

from __future__ import annotations

import asyncio
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
from simiankube.operator.kube import Kube, KubeError
from simiankube.operator.metrics import Metrics
from simiankube.operator.reconcile import Owner, reconcile
from simiankube.operator.segmentation import SegmentationVerifier
from simiankube.operator.status import Status, WorkloadState, build_status, transition_events
from simiankube.operator.tracking import StatusKeeper, WorkloadView
from simiankube.render import RenderSettings
from simiankube.model.spec import SpecError

RETRY_DELAY_SECONDS = 10.0
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
    field_manager: str = contract.MANAGED_BY  # the one server-side-apply field manager
    apply_concurrency: int = 16  # parallel applies within one kind (1,000 services in seconds, not minutes)
    status_delay_seconds: float = 1.0  # workload events within this window make one status write
    chaos_mode: str = "on"  # on | dry-run | off: an operator-wide switch over every spec.chaos
    # How long startup waits for the CRD to be served before exiting non-zero (below the chart's
    # liveness budget of ~70 s, so the clear message, not the probe, ends the pod).
    crd_timeout_seconds: float = 60.0


def now() -> datetime:
    return datetime.now(timezone.utc)


def rfc3339() -> str:
    return now().strftime("%Y-%m-%dT%H:%M:%SZ")


def owner_of(body: Mapping[str, Any]) -> Owner:
    meta = body["metadata"]
    return Owner(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


def announce(owner: Owner, type_: str, reason: str, message: str) -> None:
    """An Event on the Architecture (kopf posts it in the background)."""
    reference = cast(kopf.RawBody, owner.object_reference)
    kopf.event(kopf.Body(reference), type=type_, reason=reason, message=message[:1024])


class Controller:
    def __init__(self, config: OperatorConfig, kube: Kube, metrics: Metrics,
                 metrics_runner: web.AppRunner | None) -> None:
        self.config = config
        self.kube = kube
        self.metrics = metrics
        self._metrics_runner = metrics_runner
        self.keeper = StatusKeeper(kube, rfc3339, config.status_delay_seconds)
        self.chaos = ChaosController(kube, self.keeper, metrics, announce, now, config.chaos_mode)
        self.segmentation = SegmentationVerifier(kube, self.keeper, metrics, announce, now)

    @classmethod
    async def start(cls, config: OperatorConfig) -> Controller:
        metrics = Metrics()
        kube = await Kube.connect(config.field_manager, metrics.count_write)
        runner = await metrics_module.serve(metrics, config.metrics_port) if config.metrics_port else None
        return cls(config, kube, metrics, runner)

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

    async def close(self) -> None:
        await self.keeper.close()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        await self.kube.close()

    async def reconcile(self, body: Mapping[str, Any], view: WorkloadView,
                        logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        owner = owner_of(body)
        generation = int(body["metadata"].get("generation") or 0)
        started = time.monotonic()
        try:
            outcome = await reconcile(body, self.kube, self.config.nanoservice_image, self.config.apply_concurrency)
        except SpecError as err:
            self.metrics.reconciles.labels("invalid").inc()
            announce(owner, "Warning", "InvalidSpec", str(err))
            logger.warning("invalid spec, nothing changed: %s", err)
            await self._write_status(owner, body, view, generation=generation, problems=err.problems)
            return  # not retried: the next spec change triggers the next reconcile
        except KubeError as err:
            self.metrics.reconciles.labels("error").inc()
            if err.retryable:
                raise kopf.TemporaryError(str(err), delay=RETRY_DELAY_SECONDS) from None
            raise kopf.PermanentError(str(err)) from None
        finally:
            self.metrics.reconcile_seconds.observe(time.monotonic() - started)
        self.metrics.reconciles.labels("applied" if outcome.applied or outcome.pruned else "unchanged").inc()
        if outcome.applied:
            announce(owner, "Normal", "Applied",
                     f"applied {outcome.applied} object(s), {outcome.unchanged} unchanged")
        if outcome.pruned:
            announce(owner, "Normal", "Pruned", f"deleted {outcome.pruned} object(s) no longer in the spec")
        logger.info("applied %d, pruned %d, unchanged %d", outcome.applied, outcome.pruned, outcome.unchanged)
        await self._write_status(owner, body, view, generation=generation, desired=outcome.desired, problems=[])

    async def _write_status(self, owner: Owner, body: Mapping[str, Any], view: WorkloadView, **facts: Any) -> None:
        workloads = view.owned(owner)
        try:
            result = await self.keeper.update(
                owner, lambda previous: build_status(previous, workloads, now=rfc3339(), **facts),
                current=body.get("status") or {},
            )
        except KubeError as err:
            raise kopf.TemporaryError(f"status not written: {err}", delay=RETRY_DELAY_SECONDS) from None
        if result is not None:
            self._announce_transitions(owner, *result)

    async def workload_changed(self, event_type: str | None, body: Mapping[str, Any], view: WorkloadView,
                               logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        """Refresh the owner's status soon (kopf has indexed the change); a deleted workload triggers a repair."""
        state = WorkloadState.from_body(body)
        if not state.owner_uid:
            return
        owner = Owner(state.namespace, state.owner_name, state.owner_uid)
        self.keeper.refresh_soon(owner, view, lambda previous, new: self._announce_transitions(owner, previous, new))
        if event_type == "DELETED":
            await self.repair(owner, view, logger)

    async def repair(self, owner: Owner, view: WorkloadView,
                     logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        """Reconcile again while the owner lives: a workload deleted by hand comes back.

        After a prune or during the owner's own deletion this finds nothing to do.
        """
        try:
            body = await self.kube.get(contract.KIND, owner.namespace, owner.name)
        except KubeError as err:
            raise kopf.TemporaryError(str(err), delay=RETRY_DELAY_SECONDS) from None
        if body is None or body["metadata"]["uid"] != owner.uid or body["metadata"].get("deletionTimestamp"):
            return
        await self.reconcile(body, view, logger)

    def _announce_transitions(self, owner: Owner, previous: Mapping[str, Any], new: Status) -> None:
        for type_, reason, message in transition_events(previous, new):
            announce(owner, type_, reason, message)

    def forget(self, body: Mapping[str, Any]) -> None:
        self.keeper.forget(owner_of(body))

    async def run_chaos(self, body: Mapping[str, Any], view: WorkloadView, sleep: Sleep) -> None:
        await self.chaos.run(body, view, sleep)

    async def run_verification(self, body: Mapping[str, Any], sleep: Sleep) -> None:
        await self.segmentation.run(body, sleep)
