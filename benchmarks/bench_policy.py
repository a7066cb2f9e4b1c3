"""NetworkPolicy counts and reachability-model speed: netflixoss and generated architectures.

Counts must grow with services (services + 3), not with edges; the biggest
policy's peer count stays at one per rule however many callers a hub has.
Usage: python benchmarks/bench_policy.py [SIZES...]   (default 100 1000)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from simiankube.model.generate import generate
from simiankube.segmentation.scenario import scenario
from simiankube.render.networkpolicies import build_network_policies
from simiankube.render.settings import RenderSettings
from simiankube.model.spec import Architecture, load_file, parse_document
from simiankube.model.topology import expand

NETFLIXOSS = Path(__file__).resolve().parents[1] / "architectures" / "spigo" / "netflixoss_arch.json"


def measure(name: str, arch: Architecture) -> dict[str, Any]:
    topology = expand(arch)
    start = time.perf_counter()
    policies = build_network_policies(topology, RenderSettings())
    built = time.perf_counter()
    case = scenario(topology)
    model = case.model()
    matrix = case.matrix(model)
    judged = time.perf_counter()
    edges = sum(1 for s in arch.services for d in s.dependencies if d in {x.name for x in arch.services})
    peers = max(len(rule.get("from") or rule.get("to") or ()) for p in policies
                for rule in (*p["spec"].get("ingress", ()), *p["spec"].get("egress", ())))
    return {
        "architecture": name,
        "services": len(arch.services),
        "edges": edges,
        "pods": len(case.pods),
        "policies": len(policies),
        "max_peers_per_rule": peers,
        "build_s": round(built - start, 3),
        "model_matrix_s": round(judged - built, 3),
        "cells": len(matrix.cells),
    }


def main(sizes: list[int]) -> None:
    rows = [measure("netflixoss", load_file(NETFLIXOSS))]
    rows += [measure(f"generated-{n}", parse_document(generate(n, seed=1))) for n in sizes]
    columns = list(rows[0])
    print("  ".join(f"{c:>18}" for c in columns))
    for row in rows:
        print("  ".join(f"{row[c]!s:>18}" for c in columns))


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100, 1000])
