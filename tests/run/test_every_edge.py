"""Every vendored spigo architecture, run locally as real processes: calls on every declared edge, none elsewhere.

spigo's own shapes include services no traffic source reaches (composeV2, yogi, edge, simpleV2, testyaml has
no traffic source at all) and deep, wide graphs (edge) where random routing gives some edges a tiny share:
self-driven services and keep-warm calls must give every declared edge calls all the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from simiankube.model.spec import load_file, to_resource

ARCHITECTURES = Path(__file__).resolve().parents[2] / "architectures" / "spigo"
# yow_arch.json is byte for byte yogi_arch.json in spigo: run once.
FILES = sorted({p.read_bytes(): p for p in sorted(ARCHITECTURES.glob("*_arch.json"), reverse=True)}.values())
# Small counts (spigo -p 34: 3 instances become 1) and long enough for keep-warm calls on idle edges (every
# 2.5-5 s) with a margin for a loaded machine.
OPTIONS = ("--scale", "34", "--duration", "10", "--no-chaos", "--zipkin-file", "", "-o", "json")
CONCURRENT_RUNS = 2


def run(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simiankube.cli", "run", str(path), *OPTIONS],
                          capture_output=True, text=True, timeout=240)


def gentle(path: Path, workdir: Path) -> Path:
    """The architecture as a resource with a trace every 50 ms instead of 10 per trace starter: a loaded
    2-core machine must still answer the final scrape. Keep-warm calls keep every edge's floor."""
    resource = to_resource(load_file(path))
    resource["spec"]["traffic"] = {"intervalMs": 50}
    gentled = workdir / path.name
    gentled.write_text(json.dumps(resource))
    return gentled


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every architecture's report, a few runs at a time."""
    workdir = tmp_path_factory.mktemp("architectures")
    with ThreadPoolExecutor(CONCURRENT_RUNS) as pool:
        results = dict(zip((p.name for p in FILES), pool.map(run, (gentle(p, workdir) for p in FILES))))
    failed = {name: r.stderr[-1500:] for name, r in results.items() if r.returncode != 0}
    assert failed == {}
    return {name: json.loads(r.stdout) for name, r in results.items()}


def test_spigos_shapes_are_all_here() -> None:
    assert {p.name for p in FILES} == {
        f"{name}_arch.json" for name in ("aws_ac_ra_web", "cassandra", "composeV2", "container", "edge", "lamp",
                                         "netflix", "netflixoss", "riak", "simpleV2", "storage", "test", "testyaml",
                                         "yogi")
    }


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_declared_edge_carries_calls_and_no_other_pair_does(path: Path, reports: dict[str, dict[str, Any]]) -> None:
    arch = load_file(path)
    report = reports[path.name]
    assert report["unscraped"] == []  # else their counts are missing from every figure
    edges = {(e["caller"], e["callee"]): e for e in report["edges"]}
    assert {pair for pair, e in edges.items() if e["declared"]} == set(arch.edges)
    assert [pair for pair in arch.edges if edges[pair]["requests"] == 0] == []
    assert {pair: e["requests"] for pair, e in edges.items() if not e["declared"]} == {}
    # The self-driven services started traces; user figures count the traffic sources only.
    assert [t["service"] for t in report["self_driven"]] == [s.name for s in arch.services if s.name in arch.self_driven]
    assert all(t["requests"] > 0 for t in report["self_driven"])
    assert [t["service"] for t in report["traffic"]] == list(arch.traffic_sources)


def test_a_bad_self_driven_value_is_refused_naming_the_field(tmp_path: Path) -> None:
    document = json.loads((ARCHITECTURES / "testyaml_arch.json").read_text())
    resource = {"apiVersion": "simiankube.io/v1alpha1", "kind": "Architecture", "metadata": {"name": "t"},
                "spec": {"arch": "t", "services": document["services"], "traffic": {"selfDriven": "yes"}}}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(resource))
    result = run(path)
    assert result.returncode != 0 and result.stdout == ""
    assert 'spec.traffic.selfDriven: expected a boolean, got "yes"' in result.stderr
