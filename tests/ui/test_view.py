"""The live view's figures: parsed from /metrics texts, rates between scrapes, per edge and per service."""

from __future__ import annotations

from pathlib import Path

import pytest

from simiankube.model.spec import load_file, parse_text
from simiankube.model.topology import expand
from simiankube.ui.view import Live, declared_edges, parse_samples, policy_of_edges

ARCHITECTURES = Path(__file__).resolve().parents[2] / "architectures"
TINY = """
apiVersion: simiankube.io/v1alpha1
kind: Architecture
metadata: {name: tiny}
spec:
  arch: tiny
  services:
  - {name: web, package: karyon, count: 1, regions: 1, dependencies: [db, eureka]}
  - {name: db, package: store, count: 1, regions: 1, dependencies: []}
  - {name: www, package: denominator, count: 1, regions: 1, dependencies: [web]}
"""


def metrics(requests: int, errors: int, fast: int, *, service: str = "webserver", caller: str = "webserver-elb",
            peer: str = "memcache") -> str:
    """A nanoservice's /metrics text: `requests` served from `caller` (`fast` of them under 1 ms)."""
    labels = f'caller="{caller}",package="monolith",service="{service}"'
    client = f'package="monolith",peer="{peer}",service="{service}"'
    return "\n".join([
        "# HELP simiankube_server_requests_total Requests served, by caller service",
        "# TYPE simiankube_server_requests_total counter",
        f"simiankube_server_requests_total{{{labels}}} {requests}.0",
        f"simiankube_server_requests_created{{{labels}}} 1.79e+09",
        f"simiankube_server_errors_total{{{labels}}} {errors}.0",
        f'simiankube_server_latency_seconds_bucket{{{labels},le="0.001"}} {fast}.0',
        f'simiankube_server_latency_seconds_bucket{{{labels},le="0.01"}} {requests}.0',
        f'simiankube_server_latency_seconds_bucket{{{labels},le="+Inf"}} {requests}.0',
        f"simiankube_client_requests_total{{{client}}} {2 * requests}.0",
        f"simiankube_client_errors_total{{{client}}} 0.0",
        "process_cpu_seconds_total 1.5",
        "",
    ])


def lamp() -> Live:
    return Live(expand(load_file(ARCHITECTURES / "lamp.yaml")), "test")


def test_parse_samples_keys_by_service_and_other_end() -> None:
    samples = parse_samples(metrics(10, 1, 4))
    assert samples[("server_requests_total", "webserver", "webserver-elb", "")] == 10
    assert samples[("server_latency_seconds_bucket", "webserver", "webserver-elb", "0.001")] == 4
    assert samples[("client_requests_total", "webserver", "memcache", "")] == 20
    assert not [k for k in samples if k[0].endswith("_created")]
    assert not [k for k in samples if k[0].startswith("process")]


def test_parse_samples_sums_labels_the_view_does_not_show() -> None:
    text = ('simiankube_server_requests_total{caller="a",code="2xx",service="b"} 3\n'
            'simiankube_server_requests_total{caller="a",code="5xx",service="b"} 2\n'
            'simiankube_server_requests_total{broken\n')
    assert parse_samples(text) == {("server_requests_total", "b", "a", ""): 5.0}


def test_rates_come_from_the_last_two_scrapes() -> None:
    live = lamp()
    instance = "lamp-webserver-us-east-1-0"
    live.scraped(instance, metrics(100, 0, 50), now=10.0)
    assert live.frame()["all"]["services"]["webserver"]["rps"] == 0  # one scrape: no rate yet
    live.scraped(instance, metrics(300, 10, 150), now=12.0)
    frame = live.frame()["all"]
    webserver = frame["services"]["webserver"]
    assert webserver["rps"] == 100.0 and webserver["eps"] == 5.0
    assert webserver["ready"] == 1 and webserver["total"] == 18
    assert webserver["p50"] == pytest.approx(1.0, abs=0.01)  # 100 of 200 new requests under 1 ms
    assert 1.0 < webserver["p99"] <= 10.0
    edges = {(e["source"], e["target"]): e for e in frame["edges"]}
    assert edges[("webserver", "memcache")]["rps"] == 200.0  # the caller's client side
    assert edges[("webserver-elb", "webserver")]["p50"] == pytest.approx(1.0, abs=0.01)  # the callee's server side
    assert edges[("www", "webserver-elb")]["rps"] == 0
    assert all(e["declared"] for e in frame["edges"])


def test_a_restarted_instance_counts_from_zero() -> None:
    live = lamp()
    instance = "lamp-webserver-us-east-1-0"
    live.scraped(instance, metrics(1000, 0, 0), now=0.0)
    live.scraped(instance, metrics(40, 0, 0), now=2.0)  # counters went down: a new process
    assert live.frame()["all"]["services"]["webserver"]["rps"] == 20.0


def test_undeclared_traffic_is_shown_and_flagged() -> None:
    live = lamp()
    instance = "lamp-webserver-us-east-1-0"
    live.scraped(instance, metrics(0, 0, 0, peer="www"), now=0.0)
    live.scraped(instance, metrics(10, 0, 0, peer="www"), now=1.0)
    [odd] = [e for e in live.frame()["all"]["edges"] if not e["declared"]]
    assert (odd["source"], odd["target"], odd["rps"]) == ("webserver", "www", 20.0)


def test_chaos_events_mark_the_victim_down_and_up() -> None:
    now = [100.0]
    live = Live(expand(load_file(ARCHITECTURES / "netflixoss.yaml")), "test", clock=lambda: now[0])
    victim = "netflixoss-homepage-us-east-1-4"
    now[0] = 107.5
    live.scraped(victim, metrics(0, 0, 0, service="homepage"), now=0.0)
    live.event({"t_s": 5.0, "event": "kill", "instance": victim, "signal": "SIGKILL"})
    frame = live.frame()
    assert frame["instances"][victim]["ready"] is False
    assert frame["all"]["services"]["homepage"]["ready"] == 0
    assert frame["events"] == [{"t_s": 5.0, "event": "kill", "instance": victim, "signal": "SIGKILL", "at": 7.5}]
    assert frame["t"] == 7.5
    live.scraped(victim, None, now=6.0)
    assert live.frame()["instances"][victim]["ready"] is False
    live.event({"t_s": 7.0, "event": "ready", "instance": victim})
    assert live.frame()["instances"][victim]["ready"] is True


def test_regions_get_their_own_figures() -> None:
    live = Live(expand(load_file(ARCHITECTURES / "netflixoss.yaml")), "test")
    assert set(live.frame()["regions"]) == set(live.topology.regions) == {"us-east-1", "global"}
    assert set(live.frame()["regions"]["global"]["services"]) == {"www"}
    one_region = Live(expand(parse_text(TINY)), "test")
    assert one_region.topology.regions == ("us-east-1",) and one_region.frame()["regions"] == {}


def test_graph_lists_services_instances_and_declared_edges_with_their_policy() -> None:
    topology = expand(load_file(ARCHITECTURES / "lamp.yaml"))
    graph = Live(topology, "test", policy_of_edges(topology)).graph()
    assert [s["name"] for s in graph["services"]] == ["rds-mysql", "memcache", "webserver", "webserver-elb", "www"]
    assert {s["name"]: s["instances"] for s in graph["services"]}["webserver"] == 18
    assert len(graph["instances"]) == 23
    assert [(e["source"], e["target"], e["policy"]) for e in graph["edges"]] == [
        ("webserver", "memcache", "allowed"), ("webserver", "rds-mysql", "allowed"),
        ("webserver-elb", "webserver", "allowed"), ("www", "webserver-elb", "allowed"),
    ]
    assert graph["victim"] == "" and graph["segmentation"] == "enforced"


def test_declared_edges_leave_out_dependencies_on_unknown_services() -> None:
    assert declared_edges(expand(parse_text(TINY))) == [("web", "db"), ("www", "web")]
