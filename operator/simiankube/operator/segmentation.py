"""Periodic proof of segmentation for one Architecture (``spec.segmentation.verifyIntervalSeconds``).

Every interval, while the Architecture is rolled out (``Ready`` or
``Degraded``), the verifier asks the live namespace through the existing
core (`simiankube.segmentation.kube.verify_namespace`, reached via the operator's
``Kube``): the expected matrix from the NetworkPolicies present, observed by
probes through the pod proxy. The result goes to ``status.segmentation``
(through the ``StatusKeeper``, the one writer of status), to gauges and a
counter, and — when it differs from the last recorded result — to an Event:
``Verified``, ``SegmentationMismatch`` (Warning) or ``NotEnforced`` (Warning).

The next verification is due ``interval`` after the last one recorded in
status, so an operator restart does not verify again before its time.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from simiankube.operator.kube import KubeError
from simiankube.operator.metrics import Metrics
from simiankube.operator.reconcile import Owner, parse_body
from simiankube.operator.status import condition
from simiankube.operator.tracking import StatusKeeper
from simiankube.model.spec import Architecture, SpecError
from simiankube.segmentation.kube import rendered_policies
from simiankube.segmentation.verify import VerificationReport

# Longest single wait: an interval shortened in the spec, or readiness reached, is noticed this soon.
POLL_SECONDS = 5.0

Sleep = Callable[[float], Awaitable[bool]]  # sleeps; True when the verifier must stop
Settle = Callable[[float], Awaitable[None]]
Announce = Callable[[Owner, str, str, str], None]  # (owner, type, reason, message) → an Event
Clock = Callable[[], datetime]

log = logging.getLogger(__name__)


class SegmentationClient(Protocol):
    async def verify_segmentation(self, namespace: str, architecture: str, settle: Settle,
                                  rendered: Sequence[Mapping[str, Any]]) -> VerificationReport: ...


@dataclass(frozen=True)
class Verdict:
    """How one verification reads: metric result, Event type and reason, message."""

    result: str  # verified | mismatch | not_enforced (the counter's label)
    type: str
    reason: str
    message: str


def judge(report: VerificationReport) -> Verdict:
    """Not enforced outranks a mismatch: when the plugin ignores policies every block is open."""
    counts = f"correct:{report.correct}, incorrect:{report.incorrect}"
    if report.unknown:
        counts += f" ({report.unknown} not observed)"
    if report.enforced is False:
        return Verdict("not_enforced", "Warning", "NotEnforced",
                       f"segmentation not enforced: the network plugin left open every path the "
                       f"NetworkPolicies block; {counts}")
    if report.missing_policies:
        return Verdict("mismatch", "Warning", "SegmentationMismatch",
                       f"NetworkPolicies the architecture renders are missing: "
                       f"{', '.join(report.missing_policies)}; {counts}")
    if report.incorrect:
        return Verdict("mismatch", "Warning", "SegmentationMismatch", f"segmentation differs from the policies: "
                                                                      f"{counts}")
    return Verdict("verified", "Normal", "Verified", f"segmentation as the policies say: {counts}")


def segmentation_status(report: VerificationReport) -> dict[str, Any]:
    """``status.segmentation``: time, correct, incorrect, enforced, unobserved.

    ``enforced`` is left out when nothing is expected to be blocked (the core's
    None): a JSON merge patch cannot store a null, it deletes the key.
    """
    record = {**report.status().to_status(), "unobserved": report.unknown}
    return {key: value for key, value in record.items() if value is not None}


def verifiable(status: Mapping[str, Any]) -> bool:
    """Rolled out: Ready, or Degraded (instances missing, e.g. during a chaos kill) — not mid-rollout."""
    return any((condition(status, kind) or {}).get("status") == "True" for kind in ("Ready", "Degraded"))


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _result(record: Mapping[str, Any] | None) -> tuple[Any, ...]:
    record = record or {}
    return tuple(record.get(key) for key in ("correct", "incorrect", "unobserved", "enforced"))


class SegmentationVerifier:
    """Runs the verification loop of one Architecture until told to stop."""

    def __init__(self, kube: SegmentationClient, keeper: StatusKeeper, metrics: Metrics,
                 announce: Announce, clock: Clock) -> None:
        self._kube = kube
        self._keeper = keeper
        self._metrics = metrics
        self._announce = announce
        self._clock = clock

    def _status(self, owner: Owner, body: Mapping[str, Any]) -> Mapping[str, Any]:
        return self._keeper.known(owner) or body.get("status") or {}

    async def run(self, body: Mapping[str, Any], sleep: Sleep) -> None:
        """``body`` is a live view: every round reads the latest spec and status.

        Returns when stopped, or when the interval is set to 0.
        """
        meta = body["metadata"]
        owner = Owner(meta["namespace"], meta["name"], meta["uid"])
        last_attempt: datetime | None = None
        try:
            while True:
                try:
                    arch: Architecture | None = parse_body(body)
                except SpecError:
                    arch = None  # the reconcile reports it; look again later
                if arch is not None and arch.segmentation.verify_interval_seconds <= 0:
                    return
                wait = POLL_SECONDS
                if arch is not None:
                    status = self._status(owner, body)
                    wait = self.due_in(status, last_attempt, arch.segmentation.verify_interval_seconds)
                    if wait <= 0 and not verifiable(status):
                        wait = POLL_SECONDS
                    elif wait <= 0:
                        last_attempt = self._clock()
                        if not await self.verify_once(owner, arch, body, sleep):
                            return
                        continue
                if await sleep(min(wait, POLL_SECONDS)):
                    return
        finally:
            self._metrics.forget_segmentation(owner.namespace, owner.name)

    def due_in(self, status: Mapping[str, Any], last_attempt: datetime | None, interval: float) -> float:
        """Seconds until the next verification: ``interval`` after the last one recorded or attempted."""
        times = [t for t in (parse_time((status.get("segmentation") or {}).get("time")), last_attempt) if t]
        if not times:
            return 0.0
        return interval - (self._clock() - max(times)).total_seconds()

    async def verify_once(self, owner: Owner, arch: Architecture, body: Mapping[str, Any], sleep: Sleep) -> bool:
        """One verification, recorded; False when told to stop meanwhile."""
        stopped = False

        async def settle(seconds: float) -> None:
            nonlocal stopped
            stopped = stopped or await sleep(seconds)

        try:
            report = await self._kube.verify_segmentation(owner.namespace, arch.resource_name, settle,
                                                          rendered_policies(arch, owner.namespace))
        except KubeError as err:
            self._metrics.segmentation_verifications.labels(owner.namespace, owner.name, "error").inc()
            log.warning("segmentation of %s/%s not verified: %s", owner.namespace, owner.name, err)
            return not stopped
        if stopped:
            return False
        if not report.expected.rows:
            log.info("segmentation of %s/%s not verified: no running pods", owner.namespace, owner.name)
            return True
        verdict = judge(report)
        record = segmentation_status(report)
        before = (self._status(owner, body).get("segmentation") or None)
        try:
            await self._keeper.update(owner, lambda s: {**s, "segmentation": record}, body.get("status"))
        except KubeError as err:  # the next round writes again
            log.warning("status.segmentation of %s/%s not written: %s", owner.namespace, owner.name, err)
        self._metrics.record_segmentation(owner.namespace, owner.name, verdict.result, report.correct,
                                          report.incorrect, report.unknown, report.enforced)
        if _result(before) != _result(record):
            self._announce(owner, verdict.type, verdict.reason, verdict.message)
        return True
