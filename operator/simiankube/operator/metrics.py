"""Prometheus metrics of the operator, its chaos controller and its segmentation verifier.

One registry per operator (no process-global default registry), served by a
small aiohttp app on its own port so scraping never waits behind handlers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Rollouts on a busy cluster take minutes; recoveries of one pod seconds.
RECONCILE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
RECOVERY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.reconciles = Counter(
            "simiankube_operator_reconciles", "Reconciles of Architectures by result "
            "(applied, unchanged, invalid, error).", ["result"], registry=r)
        self.reconcile_seconds = Histogram(
            "simiankube_operator_reconcile_duration_seconds", "Time to reconcile one Architecture.",
            buckets=RECONCILE_BUCKETS, registry=r)
        self.api_writes = Counter(
            "simiankube_operator_api_writes", "Writes to the API server by verb and kind "
            "(a no-op resync adds none).", ["verb", "kind"], registry=r)
        self.watch_events = Counter(
            "simiankube_operator_watch_events", "Watch events of the operator's own child watches by kind "
            "(filtered by label on the server: other objects never arrive).", ["kind"], registry=r)
        self.pods_deleted = Counter(
            "simiankube_chaos_pods_deleted", "Pods deleted by the chaos controller.",
            ["namespace", "architecture", "service"], registry=r)
        self.recovery_seconds = Histogram(
            "simiankube_chaos_recovery_seconds", "Seconds from a chaos kill until the victim "
            "service is as ready as before.", ["namespace", "architecture", "service"], buckets=RECOVERY_BUCKETS, registry=r)
        # Gauges of the last verification; namespace too, so equal names in two namespaces do not collide.
        where = ["namespace", "architecture"]
        self.segmentation_correct = Gauge(
            "simiankube_segmentation_correct", "Cells of the last segmentation verification as expected.",
            where, registry=r)
        self.segmentation_incorrect = Gauge(
            "simiankube_segmentation_incorrect", "Cells of the last segmentation verification not as expected "
            "(unobserved cells included).", where, registry=r)
        self.segmentation_unobserved = Gauge(
            "simiankube_segmentation_unobserved", "Cells of the last segmentation verification not observed "
            "(probe requests failed).", where, registry=r)
        self.segmentation_enforced = Gauge(
            "simiankube_segmentation_enforced", "1 when the network plugin enforced the NetworkPolicies at the "
            "last verification, 0 when not; absent when nothing is expected to be blocked.", where, registry=r)
        self.segmentation_verifications = Counter(
            "simiankube_segmentation_verifications", "Segmentation verifications by result "
            "(verified, mismatch, not_enforced, error).", [*where, "result"], registry=r)

    def count_write(self, verb: str, kind: str) -> None:
        self.api_writes.labels(verb, kind).inc()

    def record_segmentation(self, namespace: str, architecture: str, result: str, correct: int, incorrect: int,
                            unobserved: int, enforced: bool | None) -> None:
        self.segmentation_verifications.labels(namespace, architecture, result).inc()
        self.segmentation_correct.labels(namespace, architecture).set(correct)
        self.segmentation_incorrect.labels(namespace, architecture).set(incorrect)
        self.segmentation_unobserved.labels(namespace, architecture).set(unobserved)
        if enforced is None:
            _remove(self.segmentation_enforced, namespace, architecture)
        else:
            self.segmentation_enforced.labels(namespace, architecture).set(1 if enforced else 0)

    def forget_segmentation(self, namespace: str, architecture: str) -> None:
        """No gauges for an Architecture no longer verified (deleted, or its interval set to 0)."""
        for gauge in (self.segmentation_correct, self.segmentation_incorrect, self.segmentation_unobserved,
                      self.segmentation_enforced):
            _remove(gauge, namespace, architecture)


def _remove(gauge: Gauge, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass  # never set


async def serve(metrics: Metrics, port: int) -> web.AppRunner:
    """Start the /metrics endpoint; the caller cleans the runner up."""

    async def scrape(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(metrics.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
