"""One latency unit (ms) everywhere in the run report, with the precision the histogram has, and the same
service names in the table and the reachability matrix."""

from __future__ import annotations

import json
import re

from simiankube.localrun.report import build_report, combine, format_text, parse_scrape
from simiankube.model.spec import parse_document
from simiankube.nanoservice.metrics import Metrics
from simiankube.segmentation.scenario import expected_service_matrix


def _report() -> tuple[str, dict]:  # type: ignore[type-arg]
    metrics = Metrics("www", "denominator")
    edge = metrics.traffic("www-elb")
    for seconds in [0.0012] * 50 + [0.0071] * 40 + [0.033] * 10:
        edge.requests += 1
        edge.observe(seconds)
    scrape = parse_scrape(metrics.exposition().decode())
    report = build_report(architecture="storage", duration_s=1.0, scrape=scrape, services=[("web", "staash", 1)],
                          traffic_sources=["www"], processes=1, chaos=[], peak_rss_mib=1.0, zipkin_file="")
    return format_text(report), json.loads(report.to_json())


def test_json_latencies_are_ms_and_say_so() -> None:
    _, data = _report()
    [traffic] = data["traffic"]
    assert data["latency_unit"] == "ms"
    assert [tuple(b) for b in traffic["histogram"]] == [(1.0, 2.5, 50), (5.0, 10.0, 40), (25.0, 50.0, 10)]
    assert traffic["p50_ms"] == 2.5 and 25 <= traffic["p99_ms"] <= 50


def test_quantiles_have_two_significant_digits() -> None:
    _, data = _report()
    for value in (data["traffic"][0]["p50_ms"], data["traffic"][0]["p99_ms"]):
        assert value == float(f"{value:.2g}")


def test_text_report_is_in_ms_too() -> None:
    text, _ = _report()
    assert "µs" not in text
    assert re.search(r"quantiles: \[\{50 2\.5\} \{99 \d+(\.\d)?\}\] \(ms\)", text)
    assert "\n1 2.5 50 0.5000 " in text and "\n25 50 10 0.1000 " in text


def test_matrix_names_services_as_the_table_does() -> None:
    arch = parse_document({"arch": "n", "services": [
        {"name": "cassSubscriber", "package": "store", "count": 1, "regions": 1},
        {"name": "webApp", "package": "karyon", "count": 1, "regions": 1, "dependencies": ["cassSubscriber"]},
    ]})
    matrix = expected_service_matrix(arch, spigo_names=True)
    assert matrix.splitlines()[0].split()[:3] == ["-", "cassSubscriber", "webApp"]
    assert "cass-subscriber" not in matrix
    assert "cass-subscriber" in expected_service_matrix(arch)


def test_self_driven_traces_are_reported_apart_and_every_edge_has_its_count() -> None:
    www, job, db = Metrics("www", "denominator"), Metrics("job", "karyon", ["www"]), Metrics("db", "store", ["job"])
    www.traffic("job").requests += 3
    job.traffic("db").requests += 5
    job.server("www").requests += 3
    db.server("job").requests += 7
    db.server("intruder").requests += 2  # not a known caller: counted as "other"
    scrape = combine(parse_scrape(m.exposition().decode()) for m in (www, job, db))
    report = build_report(architecture="a", duration_s=1.0, scrape=scrape,
                          services=[("www", "denominator", 1), ("job", "karyon", 1), ("db", "store", 1)],
                          traffic_sources=["www"], self_driven=["job"], processes=1, chaos=[], peak_rss_mib=1.0,
                          zipkin_file="", declared_edges=[("www", "job"), ("job", "db"), ("job", "nothing")])
    assert [(t.service, t.requests) for t in report.traffic] == [("www", 3)]  # user requests: sources only
    assert [(t.service, t.requests) for t in report.self_driven] == [("job", 5)]
    assert [(e.caller, e.callee, e.requests, e.declared) for e in report.edges] == [
        ("www", "job", 3, True), ("job", "db", 7, True), ("job", "nothing", 0, True), ("other", "db", 2, False)]
    text = format_text(report)
    assert "  job: 5 traces (5/s), errors: 0, timeouts: 0" in text
    assert "edges: 2 of 3 declared edges carried requests; none on: job -> nothing" in text
    assert "requests from outside the declared edges: other -> db (2)" in text
