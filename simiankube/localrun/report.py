"""The end report of `simiankube run`: figures from the nanoservices' own /metrics.

The runner scrapes every instance; this module sums the scrapes per service
and formats them. A report is a sequence of sections (`SECTIONS`): adding a
section to the text report is adding one function to that tuple.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

PREFIX = "simiankube_"

# (metric, service) -> value, or (metric, service, le) -> cumulative count for buckets
Scrape = dict[tuple[str, ...], float]


# One `simiankube_*` sample: name without the prefix, its labels, its value.
Sample = tuple[str, dict[str, str], float]


def read_samples(text: str) -> list[Sample]:
    """The `simiankube_*` samples of one /metrics text (not `*_created`).

    A minimal line parser: prometheus_client's parser cost the runner most of
    its CPU at one scrape per instance. A line it does not understand (escaped
    label values, say) goes to prometheus_client; a line neither can read is
    left out, so one bad line never loses a whole scrape.
    """
    found: list[Sample] = []
    for line in text.split("\n"):
        if not line.startswith(PREFIX):
            continue  # comments, blank lines and samples nobody here reads
        sample = _read_line(line)
        if sample is None:
            found.extend(_read_line_slow(line))
        elif not sample[0].endswith("_created"):
            found.append(sample)
    return found


def _read_line(line: str) -> Sample | None:
    brace = line.find("{")
    if brace < 0:
        name, _, rest = line.partition(" ")
        labels: dict[str, str] | None = {}
    else:
        end = line.rfind("}")
        labels = _labels(line[brace + 1:end]) if end > brace else None
        name, rest = line[:brace], line[end + 1:]
    fields = rest.split()
    if labels is None or not fields or len(fields) > 2:
        return None
    try:
        return name[len(PREFIX):], labels, float(fields[0])
    except ValueError:
        return None


def _labels(text: str) -> dict[str, str] | None:
    """`a="x",b="y"` → {a: x, b: y}; None for anything but plain unescaped values."""
    if "\\" in text:
        return None
    labels = {}
    for item in text.split('",'):
        key, eq, value = item.partition('="')
        if not eq:
            if item.strip() == "":
                continue
            return None
        labels[key.strip()] = value[:-1] if value.endswith('"') else value
    return labels


def _read_line_slow(line: str) -> list[Sample]:
    try:
        families = list(text_string_to_metric_families(line))
    except ValueError:
        return []
    return [
        (sample.name[len(PREFIX):], dict(sample.labels), sample.value)
        for family in families
        for sample in family.samples
        if sample.name.startswith(PREFIX) and not sample.name.endswith("_created")
    ]


SERVED_BY_CALLER = "served_by_caller"  # (SERVED_BY_CALLER, callee, caller) -> requests served


def parse_scrape(text: str) -> Scrape:
    """Sum one instance's samples per service (callers/peers folded together); requests served are also
    kept per caller (SERVED_BY_CALLER), so every edge has its count."""
    values: Scrape = defaultdict(float)
    for name, labels, value in read_samples(text):
        service = labels.get("service", "")
        if name.endswith("_bucket"):
            values[(name, service, labels["le"])] += value
        else:
            values[(name, service)] += value
            if name == "server_requests_total" and "caller" in labels:
                values[(SERVED_BY_CALLER, service, labels["caller"])] += value
    return dict(values)


def combine(scrapes: Iterable[Scrape]) -> Scrape:
    total: Scrape = defaultdict(float)
    for scrape in scrapes:
        for key, value in scrape.items():
            total[key] += value
    return dict(total)


def buckets(scrape: Scrape, histogram: str, service: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound seconds, count) pairs, sorted, +Inf last."""
    name = f"{histogram}_bucket"
    found = [(float(k[2]), v) for k, v in scrape.items() if len(k) == 3 and k[0] == name and k[1] == service]
    return sorted(found)


def quantile(cumulative: list[tuple[float, float]], q: float) -> float:
    """Linear interpolation inside the bucket holding the q-quantile (seconds); nan when empty."""
    if not cumulative or cumulative[-1][1] == 0:
        return math.nan
    rank = q * cumulative[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / width if width else 1.0)
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass
class ServiceStats:
    service: str
    package: str
    instances: int
    requests: int
    errors: int
    timeouts: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass
class TrafficStats:
    service: str
    requests: int
    errors: int
    timeouts: int
    requests_per_second: float
    p50_ms: float | None
    p99_ms: float | None
    # seed style: (from ms, to ms or None for +Inf, count) for every non-empty bucket
    histogram: list[tuple[float, float | None, int]] = field(default_factory=list)


@dataclass
class EdgeStats:
    """Requests `callee` served for `caller` (its /metrics by caller label); `declared`: a dependency of the
    architecture (else a caller from outside, `-`, or one the callee does not know, `other`)."""

    caller: str
    callee: str
    requests: int
    declared: bool


@dataclass
class Report:
    architecture: str
    duration_s: float
    instances: int
    processes: int
    services: list[ServiceStats]
    traffic: list[TrafficStats]
    calls_per_user_request: float | None  # attempts between services per user request
    retries: int
    chaos: list[dict[str, Any]]
    peak_rss_mib: float
    zipkin_file: str
    # CPU seconds the runner and every worker spent while traffic ran, and per request served (every hop counts):
    # on a shared machine the steady figure, where requests per second measure the other jobs too.
    cpu_s: float = 0.0
    cpu_us_per_request: float | None = None
    # Seconds the processes were ready to run but waited for a CPU (other jobs, or more work than cores).
    cpu_wait_s: float = 0.0
    # Instances that never answered the final scrape: their counts are missing from every figure.
    unscraped: list[str] = field(default_factory=list)
    # The service-level truth table the rendered NetworkPolicies encode (not enforced locally).
    expected_reachability: str = ""
    # Share of user requests that timed out; above SATURATED_TIMEOUT_SHARE the machine could not keep up.
    timeout_share: float | None = None
    saturated: bool = False
    # Every latency in the report (p50_ms, p99_ms, histogram bounds) is in this unit.
    latency_unit: str = "ms"
    # Traces the self-driven services started (work of their own, not user requests: `traffic` and every
    # user figure count traffic sources only).
    self_driven: list[TrafficStats] = field(default_factory=list)
    # Every declared edge (requests 0 when it carried none) and every other pair that carried requests.
    edges: list[EdgeStats] = field(default_factory=list)

    def to_json(self) -> str:
        data = asdict(self)
        data["services"] = {s["service"]: s for s in data["services"]}
        return json.dumps(data, indent=2, allow_nan=False) + "\n"


SATURATED_TIMEOUT_SHARE = 0.05  # more user requests than this timing out: the run measured the machine


def timeout_share(traffic: Iterable[TrafficStats]) -> float | None:
    """Timed-out user requests over all user requests, None when there were none."""
    stats = list(traffic)
    requests = sum(t.requests for t in stats)
    return sum(t.timeouts for t in stats) / requests if requests else None


def saturated(share: float | None) -> bool:
    return share is not None and share > SATURATED_TIMEOUT_SHARE


def _ms(seconds: float) -> float | None:
    """Milliseconds to two significant digits: quantiles are interpolated inside Prometheus buckets whose bounds
    are 2-2.5x apart, so a third digit would claim a precision the histogram does not have."""
    if math.isnan(seconds):
        return None
    ms = seconds * 1000
    return float(f"{ms:.2g}") if ms > 0 else 0.0


def build_report(
    *,
    architecture: str,
    duration_s: float,
    scrape: Scrape,
    services: list[tuple[str, str, int]],  # (service, package, instances) in architecture order
    traffic_sources: list[str],
    processes: int,
    chaos: list[dict[str, Any]],
    peak_rss_mib: float,
    zipkin_file: str,
    expected_reachability: str = "",
    cpu_s: float = 0.0,
    cpu_wait_s: float = 0.0,
    unscraped: Iterable[str] = (),
    self_driven: Iterable[str] = (),
    declared_edges: Iterable[tuple[str, str]] = (),
) -> Report:
    def total(metric: str, service: str) -> int:
        return int(scrape.get((metric, service), 0.0))

    def trace_stats(service: str) -> TrafficStats:
        latency = buckets(scrape, "traffic_latency_seconds", service)
        requests = total("traffic_requests_total", service)
        histogram: list[tuple[float, float | None, int]] = []
        previous_bound, previous_count = 0.0, 0.0
        for bound, cumulative in latency:
            if cumulative > previous_count:
                high = None if math.isinf(bound) else bound * 1e3
                histogram.append((previous_bound * 1e3, high, int(cumulative - previous_count)))
            previous_bound, previous_count = bound, cumulative
        return TrafficStats(
            service, requests, total("traffic_errors_total", service), total("traffic_timeouts_total", service),
            round(requests / duration_s, 1) if duration_s > 0 else 0.0,
            _ms(quantile(latency, 0.5)), _ms(quantile(latency, 0.99)), histogram,
        )

    stats = []
    for service, package, count in services:
        latency = buckets(scrape, "server_latency_seconds", service)
        stats.append(ServiceStats(
            service, package, count,
            total("server_requests_total", service), total("server_errors_total", service),
            total("server_timeouts_total", service),
            _ms(quantile(latency, 0.5)), _ms(quantile(latency, 0.99)),
        ))
    traffic = [trace_stats(service) for service in traffic_sources]
    declared = dict.fromkeys(declared_edges)
    served = {(k[2], k[1]): int(v) for k, v in scrape.items() if k[0] == SERVED_BY_CALLER}
    edges = [EdgeStats(caller, callee, served.get((caller, callee), 0), True) for caller, callee in declared]
    edges += [EdgeStats(caller, callee, n, False) for (caller, callee), n in sorted(served.items())
              if n > 0 and (caller, callee) not in declared]
    user_requests = sum(t.requests for t in traffic)
    attempts = sum(v for k, v in scrape.items() if k[0] == "client_requests_total")
    share = timeout_share(traffic)
    served_total = sum(s.requests for s in stats)
    return Report(
        architecture=architecture,
        duration_s=round(duration_s, 3),
        instances=sum(c for _, _, c in services),
        processes=processes,
        services=stats,
        traffic=traffic,
        calls_per_user_request=round(attempts / user_requests, 2) if user_requests else None,
        retries=int(sum(v for k, v in scrape.items() if k[0] == "client_retries_total")),
        chaos=chaos,
        peak_rss_mib=round(peak_rss_mib, 1),
        zipkin_file=zipkin_file,
        cpu_s=round(cpu_s, 2),
        cpu_us_per_request=round(cpu_s / served_total * 1e6, 1) if served_total and cpu_s else None,
        cpu_wait_s=round(cpu_wait_s, 2),
        unscraped=sorted(unscraped),
        expected_reachability=expected_reachability,
        timeout_share=None if share is None else round(share, 4),
        saturated=saturated(share),
        self_driven=[trace_stats(service) for service in self_driven],
        edges=edges,
    )


# -- text sections ------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def section_summary(report: Report) -> str:
    calls = "-" if report.calls_per_user_request is None else f"{report.calls_per_user_request:g}"
    return (f"{report.architecture}: {report.instances} instances in {report.processes} processes for "
            f"{report.duration_s:g} s; {calls} calls between services per user request, "
            f"{report.retries} retries; peak memory {report.peak_rss_mib:g} MiB (RSS, all processes)"
            + (f"; {report.cpu_s:g} s CPU ({report.cpu_wait_s:g} s more waiting for one), "
               f"{report.cpu_us_per_request:g} us of CPU per request served"
               if report.cpu_us_per_request is not None else "")
            + saturation_warning(report)
            + (f"\nWARNING: {len(report.unscraped)} instance(s) did not answer the final scrape; every figure "
               f"misses their counts: {', '.join(report.unscraped[:5])}{', ...' if len(report.unscraped) > 5 else ''}"
               if report.unscraped else ""))


def saturation_warning(report: Report) -> str:
    """A line for the summary when too many user requests timed out, else nothing."""
    if not report.saturated or report.timeout_share is None:
        return ""
    return (f"\nWARNING: saturated: {report.timeout_share:.1%} of user requests timed out "
            f"(more than {SATURATED_TIMEOUT_SHARE:.0%}): this machine could not keep up with the traffic, so "
            "latencies and errors measure the machine, not the architecture. Raise spec.traffic.intervalMs "
            "(the tick between user requests) or scale down (--scale below 100)."
            + (f" The processes waited {report.cpu_wait_s:g} s for a CPU while they ran {report.cpu_s:g} s: other "
               "jobs on this machine took the rest." if report.cpu_wait_s > report.cpu_s > 0 else ""))


def section_services(report: Report) -> str:
    rows = [("service", "package", "inst", "requests", "errors", "timeouts", "p50 ms", "p99 ms")]
    rows += [(s.service, s.package, str(s.instances), str(s.requests), str(s.errors), str(s.timeouts),
              _fmt(s.p50_ms), _fmt(s.p99_ms)) for s in report.services]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def section_traffic(report: Report) -> str:
    """The traffic source's response times, as spigo printed its histograms (ms instead of ns)."""
    parts = []
    for t in report.traffic:
        total = sum(c for _, _, c in t.histogram) or 1
        lines = [
            f"name: {report.architecture}.{t.service} user requests: {t.requests} ({t.requests_per_second:g}/s), "
            f"errors: {t.errors}, timeouts: {t.timeouts}",
            f"quantiles: [{{50 {_fmt(t.p50_ms)}}} {{99 {_fmt(t.p99_ms)}}}] (ms)",
            "From To Count Prob Bar (ms)",
        ]
        for low, high, count in t.histogram:
            prob = count / total
            to = "+Inf" if high is None else f"{high:g}"
            lines.append(f"{low:g} {to} {count} {prob:.4f} {'#' * min(50, int(prob * 100)) or ':'}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def section_self_driven(report: Report) -> str:
    """Services no traffic source reaches start work of their own (not user requests)."""
    if not report.self_driven:
        return "self-driven services: none (traffic sources reach every service)"
    lines = ["self-driven services (no traffic source reaches them; their traces are not user requests):"]
    lines += [f"  {t.service}: {t.requests} traces ({t.requests_per_second:g}/s), errors: {t.errors}, "
              f"timeouts: {t.timeouts}" for t in report.self_driven]
    return "\n".join(lines)


def section_edges(report: Report) -> str:
    declared = [e for e in report.edges if e.declared]
    idle = [f"{e.caller} -> {e.callee}" for e in declared if e.requests == 0]
    other = [f"{e.caller} -> {e.callee} ({e.requests})" for e in report.edges if not e.declared]
    text = f"edges: {len(declared) - len(idle)} of {len(declared)} declared edges carried requests"
    if idle:
        text += f"; none on: {', '.join(idle[:10])}{', ...' if len(idle) > 10 else ''}"
    if other:
        text += f"\nrequests from outside the declared edges: {', '.join(other[:10])}{', ...' if len(other) > 10 else ''}"
    return text


def section_chaos(report: Report) -> str:
    if not report.chaos:
        return "chaos: none"
    lines = ["chaos:"]
    for event in report.chaos:
        details = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("t_s", "event"))
        lines.append(f"  {event['t_s']:7.2f} s  {event['event']:<8} {details}")
    return "\n".join(lines)


def section_zipkin(report: Report) -> str:
    return f"spans (Zipkin v2, JSON lines): {report.zipkin_file}" if report.zipkin_file else "spans: not exported"


def section_reachability(report: Report) -> str:
    if not report.expected_reachability:
        return "segmentation: allow-all (no NetworkPolicies rendered)"
    return (
        "expected reachability from the rendered NetworkPolicies (. allowed, X blocked; rows call columns).\n"
        "Local mode does NOT enforce policies: run on a cluster and use `simiankube verify` to prove them.\n"
        + report.expected_reachability
    )


SECTIONS: tuple[Callable[[Report], str], ...] = (
    section_summary,
    section_services,
    section_traffic,
    section_self_driven,
    section_edges,
    section_chaos,
    section_reachability,
    section_zipkin,
)


def format_text(report: Report) -> str:
    return "\n\n".join(section(report) for section in SECTIONS) + "\n"
