"""The seed's response-time experiment from real traffic: hit rates make three modes (memcache hit; memcache
miss and mysql buffer hit; both miss and the disk is read), and a run saves spigo-style histograms and a
Guesstimate model."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from simiankube.localrun.histograms import bucket_of, buckets, collect, guesstimate, histograms_document
from simiankube.render.graph import read_spans
from tests.run.test_run import run

STORAGE = Path(__file__).resolve().parents[2] / "architectures" / "storage.yaml"


def test_hit_rates_make_three_modes(tmp_path: Path) -> None:
    zipkin, histograms, model = tmp_path / "spans.jsonl", tmp_path / "h.json", tmp_path / "g.json"
    report = run(str(STORAGE), "--duration", "8", "--no-chaos", "--zipkin-file", str(zipkin),
                 "--histograms", str(histograms), "--guesstimate", str(model))
    services = report["services"]
    users = services["web"]["requests"]
    assert users > 250
    # the paths, by the hit rates: all to memcache, 60 % on to mysql, 60 % x 30 % on to the disk
    assert abs(services["memcache"]["requests"] - users) <= 0.02 * users  # a few are in flight at the end
    assert abs(services["mysql"]["requests"] / users - 0.6) < 0.08
    assert abs(services["disk"]["requests"] / users - 0.18) < 0.06

    # each user request's response time, by the path its trace took
    traces: dict[str, set[str]] = {}
    roots: dict[str, int] = {}
    for span in read_spans(zipkin.read_text().splitlines(keepends=True)):
        traces.setdefault(span["traceId"], set()).add(span["localEndpoint"]["serviceName"])
        if "parentId" not in span:
            roots[span["traceId"]] = span["duration"]
    modes: dict[int, list[float]] = {1: [], 2: [], 3: []}
    for trace, duration in roots.items():
        seen = traces[trace]
        modes[3 if "disk" in seen else 2 if "mysql" in seen else 1].append(duration / 1000)
    total = sum(len(m) for m in modes.values())
    for mode, share in ((1, 0.40), (2, 0.42), (3, 0.18)):
        assert abs(len(modes[mode]) / total - share) < 0.08, (mode, len(modes[mode]), total)
    medians = [statistics.median(modes[m]) for m in (1, 2, 3)]
    assert medians[0] < medians[1] < medians[2] and medians[2] - medians[1] > 15, medians  # disk: 30 ms

    saved = json.loads(histograms.read_text())
    assert saved["unit"] == "ms" and set(saved["services"]) == {"load", "web", "memcache", "mysql", "buffer", "disk"}
    load = saved["services"]["load"]
    assert load["count"] == len(roots) and sum(c for _, _, c in load["buckets"]) == load["count"]
    assert load["p50_ms"] <= load["p99_ms"] and len(load["samples_ms"]) == min(1000, load["count"])
    space = json.loads(model.read_text())["space"]
    assert space["name"] == "storage" and len(space["graph"]["metrics"]) == 6
    assert all(g["guesstimateType"] == "DATA" and g["data"] for g in space["graph"]["guesstimates"])


def test_buckets_are_log_linear_eight_per_power_of_two() -> None:
    assert bucket_of(5) == (5, 6)
    assert bucket_of(1000) == (960, 1024)  # 512..1024 in steps of 64
    assert bucket_of(1024) == (1024, 1152)
    assert buckets([1000, 1001, 1100, 30_000]) == [(960, 1024, 2), (1024, 1152, 1), (28672, 30720, 1)]


def test_guesstimate_lays_metrics_down_the_first_column() -> None:
    spans = [{"kind": "SERVER", "localEndpoint": {"serviceName": f"s{i}"}, "duration": 1500} for i in range(28)]
    model = guesstimate("a", collect(spans))
    ids = [m["id"] for m in model["space"]["graph"]["metrics"]]
    assert ids[:2] == ["AA", "BA"] and ids[25] == "ZA" and ids[26] == "AAA" and len(set(ids)) == 28
    assert model["space"]["graph"]["guesstimates"][0]["data"] == [1.5]
    assert histograms_document("a", collect(spans))["services"]["s0"]["p50_ms"] == 1.5


def test_histograms_need_the_spans() -> None:
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "simiankube.cli", "run", str(STORAGE), "--zipkin-file", "",
                             "--histograms", "h.json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--histograms and --guesstimate are built from the run's spans" in result.stderr
