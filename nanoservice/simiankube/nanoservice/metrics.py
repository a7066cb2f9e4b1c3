"""Prometheus metrics of one nanoservice: plain integers, written out at scrape time.

Server metrics are labelled with the caller, client metrics with the peer
(callee), so every caller → callee edge of the architecture is a series.
Only callers known from the configuration get their own label value (the
services that depend on this one, the service itself for ring and replica
calls, and `-` for requests from outside); any other `x-simiankube-caller`
is counted as `other`, so a client that invents names cannot grow /metrics
or memory.

The event loop is the only writer, so the counters are plain attributes
(no lock, no per-request allocation) and the text format is written here;
tests/nanoservice/test_metrics.py proves it byte for byte equal to what
prometheus_client writes for the same observations.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from simiankube.nanoservice.hop import ANONYMOUS

# 100 µs .. 10 s
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PREFIX = "simiankube"
CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8"  # prometheus_client's CONTENT_TYPE_LATEST
OTHER = "other"  # caller label of every caller not known from the configuration
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")  # status-code class label of server responses


@dataclass(slots=True, eq=False)
class Edge:
    """Counters of one edge; server edges also count their answers by status class (`answered`)."""

    created: float = field(default_factory=time.time)
    requests: int = 0
    answers: list[int] = field(default_factory=lambda: [0] * len(CLASSES))
    errors: int = 0
    timeouts: int = 0
    retries: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))  # the last one is +Inf
    seconds: float = 0.0  # sum of the observed latencies

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.seconds += seconds

    def answered(self, status: int) -> None:
        """One answer of a server edge, by status class; 5xx are errors, 504 timeouts as well."""
        if 100 <= status < 500:
            self.answers[status // 100 - 1] += 1
        else:
            self.answers[4] += 1
            self.errors += 1
            if status == 504:
                self.timeouts += 1


# (metric name, help, kind, what it reads), in the order they are written
Family = tuple[str, str, str, Callable[[Edge], float]]
SERVER: tuple[Family, ...] = (
    ("server_requests", "Requests served, by caller service", "counter", lambda e: e.requests),
    ("server_responses", "Answers, by caller service and status class", "answers", lambda e: 0),
    ("server_errors", "Requests answered with a 5xx (timeouts included)", "counter", lambda e: e.errors),
    ("server_timeouts", "Requests whose budget ran out here (504)", "counter", lambda e: e.timeouts),
    ("server_latency_seconds", "Time to answer, by caller service", "histogram", lambda e: 0),
)
CLIENT: tuple[Family, ...] = (
    ("client_requests", "Attempts sent to a dependency (retries included)", "counter", lambda e: e.requests),
    ("client_errors", "Attempts that failed: refused, 5xx or timed out", "counter", lambda e: e.errors),
    ("client_timeouts", "Attempts that timed out", "counter", lambda e: e.timeouts),
    ("client_latency_seconds", "Time of a call including its retry", "histogram", lambda e: 0),
    ("client_retries", "Retries, each against a different instance", "counter", lambda e: e.retries),
)
TRAFFIC: tuple[Family, ...] = (
    ("traffic_requests", "User requests a traffic source started", "counter", lambda e: e.requests),
    ("traffic_errors", "User requests that failed (any 5xx after retries)", "counter", lambda e: e.errors),
    ("traffic_timeouts", "User requests that ran out of budget", "counter", lambda e: e.timeouts),
    ("traffic_latency_seconds", "User request response time", "histogram", lambda e: 0),
)
REPLICATION: tuple[Family, ...] = (
    ("replication_failures", "Copies to a replica that failed (replication does not wait)", "counter",
     lambda e: e.errors),
)


@dataclass(eq=False)
class Metrics:
    service: str
    package: str
    callers: Iterable[str] = ()  # services known to call this one (configuration)
    _known: frozenset[str] = field(init=False)
    _server: dict[str, Edge] = field(init=False, default_factory=dict)
    _client: dict[str, Edge] = field(init=False, default_factory=dict)
    _traffic: dict[str, Edge] = field(init=False, default_factory=dict)
    _replication: dict[str, Edge] = field(init=False, default_factory=dict)  # failed copies in `errors`
    _spans: Callable[[], tuple[int, int]] | None = field(init=False, default=None)
    _load: Callable[[], tuple[int, int, int]] | None = field(init=False, default=None)
    _texts: dict[tuple[str, str, str, str], str] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._known = frozenset([*self.callers, self.service, ANONYMOUS, OTHER])

    def server(self, caller: str) -> Edge:
        return _edge(self._server, caller if caller in self._known else OTHER)

    def client(self, peer: str) -> Edge:
        return _edge(self._client, peer)

    def traffic(self, peer: str) -> Edge:
        return _edge(self._traffic, peer)

    def replication(self, peer: str) -> Edge:
        return _edge(self._replication, peer)

    def sections(self) -> tuple[tuple[tuple[Family, ...], str, dict[str, Edge]], ...]:
        """Each group of families with its edge label and edges, in the order they are written."""
        return ((SERVER, "caller", self._server), (CLIENT, "peer", self._client), (TRAFFIC, "peer", self._traffic),
                (REPLICATION, "peer", self._replication))

    def watch_spans(self, counts: Callable[[], tuple[int, int]]) -> None:
        """Spans exported and dropped, read from the span exporter at scrape time."""
        self._spans = counts

    def watch_load(self, load: Callable[[], tuple[int, int, int]]) -> None:
        """Requests in flight, the limit beyond which they are shed and how many were shed, read at scrape time."""
        self._load = load

    def exposition(self) -> bytes:
        """The Prometheus text format (version 1.0.0) of every metric, as prometheus_client writes it."""
        out: list[str] = []
        labels = self._labels
        for families, label, edges in self.sections():
            for name, doc, kind, read in families:
                full = f"{PREFIX}_{name}"
                samples: list[tuple[str, str, float]] = []
                created: list[tuple[str, str, float]] = []
                for other, edge in edges.items():
                    if kind == "histogram":
                        total = 0
                        for le, count in zip(LE, edge.buckets):
                            total += count
                            samples.append((f"{full}_bucket", labels(label, other, "le", le), total))
                        samples.append((f"{full}_count", labels(label, other), total))
                        samples.append((f"{full}_sum", labels(label, other), edge.seconds))
                        created.append((f"{full}_created", labels(label, other), edge.created))
                        continue
                    counts = ([(labels(label, other, "code", c), n) for c, n in zip(CLASSES, edge.answers) if n]
                              if kind == "answers" else [(labels(label, other), read(edge))])
                    for text, value in counts:
                        samples.append((f"{full}_total", text, value))
                        created.append((f"{full}_created", text, edge.created))
                _family(out, f"{full}_total" if kind != "histogram" else full, doc,
                        "histogram" if kind == "histogram" else "counter", samples)
                if created:
                    _family(out, f"{full}_created", doc, "gauge", created)
        if self._spans is not None:
            exported, dropped = self._spans()
            for name, value, doc in (
                ("spans_exported", exported, "Spans written to the Zipkin file or collector"),
                ("spans_dropped", dropped, "Spans lost: buffer full or the file/collector failed"),
            ):
                _family(out, f"{PREFIX}_{name}_total", doc, "counter",
                        [(f"{PREFIX}_{name}_total", labels("", ""), value)])
        if self._load is not None:
            in_flight, limit, shed = self._load()
            for name, value, doc, kind in (
                ("in_flight", in_flight, "Service requests admitted and not yet answered", "gauge"),
                ("in_flight_limit", limit, "Requests in flight beyond which service requests are shed", "gauge"),
                ("shed_total", shed, "Requests answered 503 at once because the in-flight limit was reached",
                 "counter"),
            ):
                _family(out, f"{PREFIX}_{name}", doc, kind, [(f"{PREFIX}_{name}", labels("", ""), value)])
        return "".join(out).encode()

    def _labels(self, label: str, other: str, extra: str = "", value: str = "") -> str:
        """The label text of one sample, built once: label values never change (and edges are bounded)."""
        key = (label, other, extra, value)
        text = self._texts.get(key)
        if text is None:
            pairs = {"service": self.service, "package": self.package}
            if label:
                pairs[label] = other
            if extra:
                pairs[extra] = value
            text = self._texts[key] = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(pairs.items()))
        return text


def _edge(edges: dict[str, Edge], other: str) -> Edge:
    """The edge to `other`, created on first use."""
    edge = edges.get(other)
    if edge is None:
        edge = edges[other] = Edge()
    return edge


def _family(out: list[str], name: str, doc: str, kind: str, samples: list[tuple[str, str, float]]) -> None:
    out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
    out.extend(f"{sample}{{{text}}} {_go_float(value)}\n" for sample, text, value in samples)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _go_float(value: float) -> str:
    """A float as Go (and so prometheus_client) writes it: 1.0, 0.25, 1.7e+09, +Inf."""
    value = float(value)
    if value == math.inf:
        return "+Inf"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


LE = tuple(_go_float(bound) for bound in (*BUCKETS, math.inf))  # the `le` label of each bucket
