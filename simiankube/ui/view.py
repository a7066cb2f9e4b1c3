"""What the browser draws: the architecture's graph and live frames of figures, as plain data.

Pure: the local runner and the cluster reader push /metrics texts and chaos
events into a `Live`; `graph()` and `frame()` return JSON-ready dicts. Rates
come from the difference between an instance's last two scrapes (a restarted
instance's counters start again from zero); latency percentiles from the same
difference of histogram buckets, so they describe the last scrape interval.

Edges are read from both ends, as the nanoservices label them: the caller's
`client_*{peer=callee}` gives the request and error rate of an edge, the
callee's `server_latency_seconds{caller=...}` its p50/p99.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from simiankube import contract
from simiankube.localrun.report import quantile, read_samples
from simiankube.model.topology import Topology
from simiankube.segmentation.scenario import scenario

# The other end of an edge, by the label the nanoservice puts on it.
OTHER_END = ("peer", "caller")
MAX_EVENTS = 200  # the timeline keeps the latest ones

# (metric, service, other end, le) -> value; le is "" for counters.
Samples = dict[tuple[str, str, str, str], float]


def parse_samples(text: str) -> Samples:
    """The `simiankube_*` samples of one /metrics text, summed over labels the view does not show."""
    values: Samples = defaultdict(float)
    for name, labels, value in read_samples(text):
        other = next((labels[k] for k in OTHER_END if k in labels), "")
        values[(name, labels.get("service", ""), other, labels.get("le", ""))] += value
    return dict(values)


@dataclass
class InstanceState:
    service: str
    region: str
    zone: str
    ready: bool = False
    seen: float | None = None  # when the last scrape answered
    last: Samples = field(default_factory=dict)
    rates: Samples = field(default_factory=dict)  # per second over the last interval


def _rates(before: Samples, after: Samples, seconds: float) -> Samples:
    """Per-second increase; a counter that went down was reset (a restart), so it rose from zero."""
    rates = {}
    for key, value in after.items():
        previous = before.get(key, 0.0)
        rise = value - previous if value >= previous else value
        if rise:
            rates[key] = rise / seconds
    return rates


def _percentiles(buckets: Mapping[str, float]) -> tuple[float | None, float | None]:
    cumulative = sorted((float(le), count) for le, count in buckets.items())
    return _ms(quantile(cumulative, 0.5)), _ms(quantile(cumulative, 0.99))


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 3)


@dataclass
class Live:
    """The architecture's graph and the latest state of every instance; fed by scrapes and events."""

    topology: Topology
    source: str  # "local run" or "namespace NS"
    policy: dict[tuple[str, str], bool] = field(default_factory=dict)  # declared edge -> allowed by policy
    verification: dict[str, Any] | None = None  # status.segmentation of the last verify
    instances: dict[str, InstanceState] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic  # frames and events are timed from the view's start
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()
        for i in self.topology.instances:
            self.instances.setdefault(i.name, InstanceState(i.service.name, i.region, i.zone))

    # -- input -----------------------------------------------------------------------------

    def scraped(self, instance: str, text: str | None, now: float) -> None:
        """One scrape of `instance`: its /metrics text, or None when it did not answer."""
        state = self.instances.get(instance)
        if state is None:
            return
        if text is None:
            state.ready, state.rates = False, {}
            return
        samples = parse_samples(text)
        if state.seen is not None and now > state.seen:
            state.rates = _rates(state.last, samples, now - state.seen)
        state.last, state.seen, state.ready = samples, now, True

    def set_ready(self, instance: str, ready: bool) -> None:
        state = self.instances.get(instance)
        if state is not None:
            state.ready = ready
            if not ready:
                state.rates = {}

    def replaced(self, instance: str) -> None:
        """A new process (pod) now stands for `instance`: its counters start again, unready until seen."""
        state = self.instances.get(instance)
        if state is not None:
            state.ready, state.seen, state.last, state.rates = False, None, {}, {}

    def event(self, event: Mapping[str, Any]) -> None:
        """A chaos event: `event` (kill, ready, recovered, ...), `instance`, `t_s` and details.

        Stamped with `at`, seconds since the view started (a run's `t_s` counts from its traffic's start).
        """
        self.events.append({**event, "at": round(self.clock() - self.started, 2)})
        del self.events[:-MAX_EVENTS]
        if event.get("event") in ("kill", "ready"):
            self.set_ready(str(event.get("instance", "")), event["event"] == "ready")

    # -- output ----------------------------------------------------------------------------

    def graph(self) -> dict[str, Any]:
        """What does not change while the view is open: services, regions, instances, declared edges."""
        arch = self.topology.architecture
        regions_of: dict[str, list[str]] = defaultdict(list)
        instances_of: dict[str, int] = defaultdict(int)
        for placement in self.topology.placements:
            regions_of[placement.service.name].append(placement.region)
            instances_of[placement.service.name] += placement.replicas
        return {
            "architecture": arch.resource_name,
            "description": arch.description,
            "source": self.source,
            "victim": arch.chaos.victim or arch.victim,
            "segmentation": arch.segmentation.mode,
            "verification": self.verification,
            "regions": list(self.topology.regions),
            "services": [
                {"name": s.name, "package": s.package, "regions": regions_of[s.name],
                 "instances": instances_of[s.name],
                 "source": arch.starts_traces(s.name), "self_driven": s.name in arch.self_driven}
                for s in arch.services
            ],
            "edges": [
                {"source": s, "target": t, "policy": _policy_word(self.policy.get((s, t)))}
                for s, t in declared_edges(self.topology)
            ],
            "instances": [
                {"name": i.name, "service": i.service.name, "region": i.region, "zone": i.zone}
                for i in self.topology.instances
            ],
        }

    def frame(self) -> dict[str, Any]:
        """Live figures, for the whole architecture and per region, at `t` seconds since the view started."""
        declared = set(declared_edges(self.topology))
        regions = self.topology.regions if len(self.topology.regions) > 1 else ()
        return {
            "t": round(self.clock() - self.started, 2),
            "all": _figures(self.instances.values(), declared),
            "regions": {r: _figures([s for s in self.instances.values() if s.region == r], declared) for r in regions},
            "instances": {name: {"ready": s.ready, "rps": round(_rate(s.rates, "server_requests_total"), 2)}
                          for name, s in self.instances.items()},
            "events": self.events,
            "verification": self.verification,
        }


def _policy_word(allowed: bool | None) -> str:
    return "unknown" if allowed is None else "allowed" if allowed else "denied"


def _rate(rates: Samples, metric: str) -> float:
    return sum(v for k, v in rates.items() if k[0] == metric)


def _figures(members: Iterable[InstanceState], declared: set[tuple[str, str]]) -> dict[str, Any]:
    """Per service and per edge: rates summed over `members`, percentiles over their buckets."""
    service: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    edge: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    service_buckets: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    edge_buckets: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    ready: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for state in members:
        ready[state.service][0] += state.ready
        ready[state.service][1] += 1
        for (metric, svc, other, le), value in state.rates.items():
            if metric == "server_requests_total":
                service[svc]["rps"] += value
            elif metric == "server_errors_total":
                service[svc]["eps"] += value
            elif metric == "server_latency_seconds_bucket":
                service_buckets[svc][le] += value
                edge_buckets[(other, svc)][le] += value
            elif metric == "client_requests_total":
                edge[(svc, other)]["rps"] += value
            elif metric == "client_errors_total":
                edge[(svc, other)]["eps"] += value
            elif metric == "traffic_requests_total":
                service[svc]["rps"] += value
            elif metric == "traffic_errors_total":
                service[svc]["eps"] += value
            elif metric == "traffic_latency_seconds_bucket":
                service_buckets[svc][le] += value
    services = {}
    for name, (up, total) in ready.items():
        p50, p99 = _percentiles(service_buckets.get(name, {}))
        figures = service.get(name, {})
        services[name] = {"ready": up, "total": total, "rps": round(figures.get("rps", 0.0), 2),
                          "eps": round(figures.get("eps", 0.0), 2), "p50": p50, "p99": p99}
    edges = []
    for pair in sorted(declared | set(edge)):
        p50, p99 = _percentiles(edge_buckets.get(pair, {}))
        figures = edge.get(pair, {})
        edges.append({"source": pair[0], "target": pair[1], "declared": pair in declared,
                      "rps": round(figures.get("rps", 0.0), 2), "eps": round(figures.get("eps", 0.0), 2),
                      "p50": p50, "p99": p99})
    return {"services": services, "edges": edges}


def declared_edges(topology: Topology) -> list[tuple[str, str]]:
    """caller → callee for every dependency that names a service of the architecture, in spec order."""
    return list(topology.architecture.edges)


def policy_of_edges(topology: Topology) -> dict[tuple[str, str], bool]:
    """Whether the rendered NetworkPolicies let the first instance of a caller reach its callee's.

    One pod pair per declared edge (not the whole matrix): cheap enough for thousands of services.
    """
    case = scenario(topology)
    model = case.model()
    first: dict[str, Any] = {}
    by_kube = {s.kube_name: s.name for s in topology.architecture.services}
    for pod in case.pods:
        first.setdefault(by_kube[pod.labels[contract.LABEL_SERVICE]], pod)
    return {
        (s, t): model.allowed(first[s], first[t], contract.HTTP_PORT)
        for s, t in declared_edges(topology)
        if s in first and t in first
    }
