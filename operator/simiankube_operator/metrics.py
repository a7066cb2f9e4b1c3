"""Prometheus metrics of the operator and its chaos controller.

One registry per operator (no process-global default registry), served by a
small aiohttp app on its own port so scraping never waits behind handlers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

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
        self.pods_deleted = Counter(
            "simiankube_chaos_pods_deleted", "Pods deleted by the chaos controller.",
            ["architecture", "service"], registry=r)
        self.recovery_seconds = Histogram(
            "simiankube_chaos_recovery_seconds", "Seconds from a chaos kill until the victim "
            "service is as ready as before.", ["architecture", "service"], buckets=RECOVERY_BUCKETS, registry=r)

    def count_write(self, verb: str, kind: str) -> None:
        self.api_writes.labels(verb, kind).inc()


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
