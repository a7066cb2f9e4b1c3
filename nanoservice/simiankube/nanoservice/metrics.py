"""Prometheus metrics of one nanoservice, in a registry of its own (no globals).

Server metrics are labelled with the caller, client metrics with the peer
(callee), so every caller → callee edge of the architecture is a series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import CounterMetricFamily, Metric

# 100 µs .. 10 s
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PREFIX = "simiankube"


@dataclass
class Edge:
    """Pre-labelled children of one edge, so the hot path does no label lookups."""

    requests: Counter
    errors: Counter
    timeouts: Counter
    latency: Histogram
    retries: Counter | None = None


@dataclass
class Metrics:
    service: str
    package: str
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=False))

    def __post_init__(self) -> None:
        def family(kind: type[MetricWrapperBase], name: str, doc: str, label: str) -> MetricWrapperBase:
            labels = ["service", "package", label]
            if kind is Histogram:
                return Histogram(f"{PREFIX}_{name}", doc, labels, registry=self.registry, buckets=BUCKETS)
            return kind(f"{PREFIX}_{name}", doc, labels, registry=self.registry)

        self._server = (
            family(Counter, "server_requests", "Requests served, by caller service", "caller"),
            family(Counter, "server_errors", "Requests answered with a 5xx (timeouts included)", "caller"),
            family(Counter, "server_timeouts", "Requests whose budget ran out here (504)", "caller"),
            family(Histogram, "server_latency_seconds", "Time to answer, by caller service", "caller"),
        )
        self._client = (
            family(Counter, "client_requests", "Attempts sent to a dependency (retries included)", "peer"),
            family(Counter, "client_errors", "Attempts that failed: refused, 5xx or timed out", "peer"),
            family(Counter, "client_timeouts", "Attempts that timed out", "peer"),
            family(Histogram, "client_latency_seconds", "Time of a call including its retry", "peer"),
            family(Counter, "client_retries", "Retries, each against a different instance", "peer"),
        )
        self._traffic = (
            family(Counter, "traffic_requests", "User requests a traffic source started", "peer"),
            family(Counter, "traffic_errors", "User requests that failed (any 5xx after retries)", "peer"),
            family(Counter, "traffic_timeouts", "User requests that ran out of budget", "peer"),
            family(Histogram, "traffic_latency_seconds", "User request response time", "peer"),
        )
        self._replication_failures = family(
            Counter, "replication_failures", "Copies to a replica that failed (replication does not wait)", "peer")
        self._sides = {"server": self._server, "client": self._client, "traffic": self._traffic}
        self._edges: dict[tuple[str, str], Edge] = {}

    def _edge(self, side: str, other: str) -> Edge:
        edge = self._edges.get((side, other))
        if edge is None:
            children = [f.labels(self.service, self.package, other) for f in self._sides[side]]
            edge = Edge(*children)  # type: ignore[arg-type]
            self._edges[(side, other)] = edge
        return edge

    def watch_spans(self, counts: Callable[[], tuple[int, int]]) -> None:
        """Spans exported and dropped, read from the span exporter at scrape time."""
        self.registry.register(_SpanCounts(self.service, self.package, counts))

    def server(self, caller: str) -> Edge:
        return self._edge("server", caller)

    def client(self, peer: str) -> Edge:
        return self._edge("client", peer)

    def traffic(self, peer: str) -> Edge:
        return self._edge("traffic", peer)

    def replication_failures(self, peer: str) -> Counter:
        return self._replication_failures.labels(self.service, self.package, peer)  # type: ignore[return-value]


@dataclass(eq=False)  # a registry keys collectors by identity
class _SpanCounts:
    """A collector: the exporter keeps plain integers, off the hot path's locks."""

    service: str
    package: str
    counts: Callable[[], tuple[int, int]]

    def collect(self) -> Iterator[Metric]:
        exported, dropped = self.counts()
        for name, value, doc in (
            ("spans_exported", exported, "Spans written to the Zipkin file or collector"),
            ("spans_dropped", dropped, "Spans lost: buffer full or the file/collector failed"),
        ):
            family = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["service", "package"])
            family.add_metric([self.service, self.package], value)
            yield family
