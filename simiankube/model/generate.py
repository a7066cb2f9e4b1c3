"""Random architectures for scale tests: realistic, seeded, reproducible.

The shape follows the seed's microservice pictures: one traffic source in
front of an elb, a few edge proxies, business-logic services in layers, data
access layers and stores at the leaves. Dependencies are drawn by preferential
attachment, so a few services become hubs (a power-law in-degree), as in real
call graphs. Every service is reachable from the traffic source: one nobody
upstream calls would get no traffic at all (a proxy picks only a few of the
top services).
"""

from __future__ import annotations

import random
from typing import Any

from simiankube import contract
from simiankube.model.spec import extend_reach


def generate(services: int, seed: int = 0, name: str = "") -> dict[str, Any]:
    """An `Architecture` resource with `services` services (at least 4)."""
    if services < 4:
        raise ValueError(f"--services: need at least 4 (source, elb, proxy, store), got {services}")
    rng = random.Random(seed)
    body = services - 2  # the traffic source and its elb come on top
    n_proxy = max(1, body // 50)
    n_store = max(1, body * 25 // 100)
    n_staash = min(body * 10 // 100, body - n_proxy - n_store)
    n_logic = body - n_proxy - n_store - n_staash
    store_packages = ("store", "cache", "priamCassandra", "volume", "riak")
    stores = [f"{pkg.lower()}{i}" for i, pkg in ((i, store_packages[i % 5]) for i in range(n_store))]
    entries: list[dict[str, Any]] = [
        {"name": store, "package": package, "count": 3 if package in ("priamCassandra", "riak") else 2,
         "regions": 1, "dependencies": [store] if package in ("priamCassandra", "riak") else []}
        for store, package in ((s, store_packages[i % 5]) for i, s in enumerate(stores))
    ]
    in_degree = {s: 0 for s in stores}

    def attach(candidates: list[str], k: int) -> list[str]:
        chosen: list[str] = []
        for _ in range(min(k, len(candidates))):
            pool = [c for c in candidates if c not in chosen]
            weights = [1 + in_degree[c] for c in pool]
            pick = rng.choices(pool, weights)[0]
            chosen.append(pick)
            in_degree[pick] += 1
        return sorted(chosen)

    staash = [f"dal{i}" for i in range(n_staash)]
    for s in staash:
        entries.append({"name": s, "package": "staash", "count": 2, "regions": 1,
                        "dependencies": attach(stores, rng.randint(1, 3))})
        in_degree[s] = 0
    # Business logic in layers: each calls deeper layers and data access.
    layers = max(1, min(6, n_logic // 20))
    logic = [f"svc{i}" for i in range(n_logic)]
    deeper: list[str] = list(staash)
    for layer in range(layers):
        members = logic[layer::layers]
        for s in members:
            entries.append({"name": s, "package": "karyon", "count": rng.choice((1, 2, 3)), "regions": 1,
                            "dependencies": attach(deeper, rng.randint(1, 4))})
        for s in members:
            in_degree[s] = 0
        deeper = deeper + members
    proxies = [f"proxy{i}" for i in range(n_proxy)]
    for s in proxies:
        entries.append({"name": s, "package": "zuul", "count": 3, "regions": 1,
                        "dependencies": attach(logic or staash or stores, rng.randint(2, 8))})
        in_degree[s] = 0
    # Callers that may call each service, top down; those drawn above that no traffic would reach
    # get one caller each, drawn from services already reached (after the draws above, so a seed's
    # shape only gains edges).
    upper = list(proxies)
    allowed: list[tuple[str, list[str]]] = []
    for layer in reversed(range(layers)):
        members = logic[layer::layers]
        allowed += [(m, list(upper)) for m in members]
        upper += members
    allowed += [(s, logic or proxies) for s in staash] + [(s, staash + logic or proxies) for s in stores]
    connect_unreached(entries, proxies, allowed, rng)
    entries.append({"name": "edge-elb", "package": "elb", "count": 0, "regions": 1, "dependencies": proxies})
    entries.append({"name": "www", "package": "denominator", "count": 0, "regions": 0, "dependencies": ["edge-elb"]})
    arch_name = name or f"generated-{services}"
    return {
        "apiVersion": f"{contract.API_GROUP}/{contract.API_VERSION}",
        "kind": contract.KIND,
        "metadata": {"name": arch_name},
        "spec": {
            "arch": arch_name,
            "description": f"Generated: {services} services, seed {seed}",
            "version": "arch-0.1",
            "victim": (logic or staash or stores)[0],
            "services": entries,
        },
    }


def connect_unreached(entries: list[dict[str, Any]], roots: list[str], allowed: list[tuple[str, list[str]]],
                      rng: random.Random) -> None:
    """Give every service in ``allowed`` (in top-down order) that ``roots`` do not reach a caller from
    its allowed callers that they do reach."""
    by_name = {e["name"]: e for e in entries}
    reached: set[str] = set()

    def reach(name: str) -> None:
        extend_reach(reached, name, lambda current: by_name[current]["dependencies"])

    for root in roots:
        reach(root)
    for name, callers in allowed:
        if name not in reached:
            caller = by_name[rng.choice([c for c in callers if c in reached])]
            caller["dependencies"] = sorted([*caller["dependencies"], name])
            reach(name)
