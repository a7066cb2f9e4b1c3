"""The report's pure parts: the fast /metrics parser and the saturation warning."""

from __future__ import annotations

import json
import random

from prometheus_client.parser import text_string_to_metric_families

from simiankube.nanoservice.metrics import Metrics
from simiankube.localrun.report import (
    Report,
    TrafficStats,
    build_report,
    format_text,
    parse_scrape,
    read_samples,
    saturated,
    timeout_share,
)


def _traffic(requests: int, timeouts: int, service: str = "www") -> TrafficStats:
    return TrafficStats(service, requests, timeouts, timeouts, requests / 8, 1.0, 2.0)


def _report(*traffic: TrafficStats) -> Report:
    scrape = {}
    for t in traffic:
        scrape[("traffic_requests_total", t.service)] = float(t.requests)
        scrape[("traffic_errors_total", t.service)] = float(t.errors)
        scrape[("traffic_timeouts_total", t.service)] = float(t.timeouts)
    return build_report(architecture="a", duration_s=8.0, scrape=scrape, services=[],
                        traffic_sources=[t.service for t in traffic], processes=1, chaos=[], peak_rss_mib=1.0,
                        zipkin_file="")


def test_timeout_share_sums_every_source() -> None:
    assert timeout_share([]) is None
    assert timeout_share([_traffic(0, 0)]) is None
    assert timeout_share([_traffic(100, 10), _traffic(300, 10, "api")]) == 0.05


def test_saturated_above_five_percent_only() -> None:
    assert not saturated(None)
    assert not saturated(0.0)
    assert not saturated(0.05)
    assert saturated(0.0501)


def test_saturation_blames_other_jobs_only_when_the_processes_waited_longer_than_they_ran() -> None:
    report = _report(_traffic(1000, 400))
    assert "other jobs on this machine" not in format_text(report)  # no CPU figures: nothing to say
    for cpu, wait, blamed in ((2.0, 3.0, True), (2.0, 1.0, False)):
        report.cpu_s, report.cpu_wait_s = cpu, wait
        assert ("waited 3 s for a CPU while they ran 2 s" in format_text(report)) is blamed


def test_saturated_run_warns_in_text_and_json() -> None:
    report = _report(_traffic(1000, 400), _traffic(1000, 300, "api"))
    assert report.saturated and report.timeout_share == 0.35
    text = format_text(report)
    assert "WARNING: saturated: 35.0% of user requests timed out" in text
    assert "spec.traffic.intervalMs" in text and "--scale" in text
    data = json.loads(report.to_json())
    assert data["saturated"] is True and data["timeout_share"] == 0.35


def test_healthy_run_has_no_warning() -> None:
    report = _report(_traffic(1000, 50))
    assert not report.saturated and report.timeout_share == 0.05
    assert "WARNING" not in format_text(report)
    assert json.loads(report.to_json())["saturated"] is False
    empty = _report()
    assert empty.timeout_share is None and not empty.saturated


def test_fast_parser_sums_like_prometheus_client() -> None:
    rng = random.Random(7)
    peers = ["plain", "dash-ed", 'quo"te', "back\\slash", "new\nline", 'a="b",c']
    metrics = Metrics("svc", "karyon", callers=peers)
    for peer in peers:
        for edge in (metrics.client(peer), metrics.server(peer), metrics.traffic(peer)):
            edge.requests += rng.randint(1, 100)
            edge.errors += rng.randint(0, 5)
            edge.timeouts += rng.randint(0, 5)
            edge.retries += 2
            for _ in range(40):
                edge.observe(rng.random() * 3)
                edge.answered(rng.choice([200, 404, 500]))
    text = metrics.exposition().decode()
    assert read_samples(text) == _prometheus_client_samples(text)
    plain = Metrics("other", "store")
    plain.client("x").requests += 3
    plain.server("y").observe(0.02)
    text = plain.exposition().decode()
    assert read_samples(text) == _prometheus_client_samples(text)
    assert parse_scrape(text)[("client_requests_total", "other")] == 3.0


def test_a_line_the_fast_reader_cannot_read_goes_to_prometheus_client_and_a_broken_one_is_left_out() -> None:
    text = ('simiankube_server_requests_total{service="a\\"b",caller="c"} 2.0\n'
            'simiankube_server_requests_total{broken\n'
            'simiankube_up 1\n')
    assert read_samples(text) == [("server_requests_total", {"service": 'a"b', "caller": "c"}, 2.0), ("up", {}, 1.0)]


def _prometheus_client_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name.removeprefix("simiankube_"), dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("simiankube_") and not sample.name.endswith("_created")
    ]


def test_cpu_per_request_counts_every_hop() -> None:
    scrape = {("server_requests_total", "web"): 3000.0, ("server_requests_total", "db"): 1000.0}
    report = build_report(architecture="a", duration_s=8.0, scrape=scrape, services=[("web", "zuul", 2),
                          ("db", "store", 2)], traffic_sources=[], processes=1, chaos=[], peak_rss_mib=1.0,
                          zipkin_file="", cpu_s=2.0, cpu_wait_s=0.5)
    assert report.cpu_s == 2.0 and report.cpu_us_per_request == 500.0 and report.cpu_wait_s == 0.5
    assert "2 s CPU (0.5 s more waiting for one), 500 us of CPU per request served" in format_text(report)
    assert _report().cpu_us_per_request is None  # nothing served, or no CPU measured: no figure
    assert "us of CPU" not in format_text(_report())


def test_instances_missing_from_the_final_scrape_are_named() -> None:
    report = build_report(architecture="a", duration_s=8.0, scrape={}, services=[], traffic_sources=[],
                          processes=1, chaos=[], peak_rss_mib=1.0, zipkin_file="",
                          unscraped=[f"a-svc-{n}" for n in range(7, 0, -1)])
    text = format_text(report)
    assert "WARNING: 7 instance(s) did not answer the final scrape" in text
    assert "a-svc-1, a-svc-2, a-svc-3, a-svc-4, a-svc-5, ..." in text
    assert json.loads(report.to_json())["unscraped"] == [f"a-svc-{n}" for n in range(1, 8)]
    assert "final scrape" not in format_text(_report())
