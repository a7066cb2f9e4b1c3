"""The rendered NetworkPolicies of every example architecture, judged by the model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from simiankube import contract
from simiankube.model.generate import generate
from simiankube.segmentation.scenario import CLIENTS, DNS_TARGETS, METRICS, expected_service_matrix, scenario
from simiankube.segmentation.reachability import ALLOWED, BLOCKED
from simiankube.render import RenderSettings, render
from simiankube.render.networkpolicies import build_network_policies, entry_services
from simiankube.model.spec import Architecture, Segmentation, load_file, parse_document
from simiankube.model.topology import expand

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(
    [*(ROOT / "architectures" / "spigo").glob("*_arch.json"), *(ROOT / "architectures").rglob("*.yaml")]
)


def architectures() -> list[tuple[str, Architecture]]:
    found = [(path.name if path.suffix == ".json" else str(path.relative_to(ROOT)), load_file(path))
             for path in EXAMPLES]
    found += [(f"generated-{n}-seed{seed}", parse_document(generate(n, seed=seed))) for n, seed in ((12, 1), (60, 2))]
    return found


CASES = architectures()


def test_examples_are_found() -> None:
    assert {"lamp_arch.json", "netflixoss_arch.json", "riak_arch.json"} <= {name for name, _ in CASES}


@pytest.mark.parametrize("arch", [a for _, a in CASES], ids=[n for n, _ in CASES])
def test_exactly_the_declared_edges_are_allowed(arch: Architecture) -> None:
    topology = expand(arch)
    case = scenario(topology, RenderSettings(namespace="shop"))
    matrix = case.matrix(case.model())
    pods_per_service = {s.kube_name: sum(p.replicas for p in topology.placements_of(s.name)) for s in arch.services}
    names = {s.name for s in arch.services}
    for source in arch.services:
        callees = {arch.service(d).kube_name for d in source.dependencies if d in names}
        for destination in arch.services:
            target = destination.kube_name
            if target in callees:
                want = ALLOWED
            elif target == source.kube_name and pods_per_service[target] == 1:
                want = ALLOWED  # a lone pod reaches only itself: loopback
            else:
                want = BLOCKED
            assert matrix.cell(source.kube_name, target) == want, (source.name, destination.name)
        for dns, _ in DNS_TARGETS:
            assert matrix.cell(source.kube_name, dns) == ALLOWED
    entries = {s.kube_name for s in entry_services(topology)}
    for service in arch.services:
        assert matrix.cell(METRICS, service.kube_name) == ALLOWED
        assert matrix.cell(CLIENTS, service.kube_name) == (ALLOWED if service.kube_name in entries else BLOCKED)


@pytest.mark.parametrize("arch", [a for _, a in CASES], ids=[n for n, _ in CASES])
def test_one_policy_per_service_plus_three(arch: Architecture) -> None:
    policies = build_network_policies(expand(arch), RenderSettings())
    assert len(policies) == len(arch.services) + 3
    assert len({p["metadata"]["name"] for p in policies}) == len(policies)


def test_hub_ingress_is_one_peer_whatever_the_number_of_callers() -> None:
    arch = parse_document(generate(200, seed=3))
    policies = build_network_policies(expand(arch), RenderSettings())
    callers: dict[str, int] = {}
    for service in arch.services:
        for dep in service.dependencies:
            callers[dep] = callers.get(dep, 0) + 1
    hub = arch.service(max(callers, key=lambda name: callers[name]))
    assert callers[hub.name] > 5
    policy = next(p for p in policies if p["metadata"]["labels"].get(contract.LABEL_SERVICE) == hub.kube_name)
    assert [len(rule["from"]) for rule in policy["spec"]["ingress"]] == [1]


def test_allow_all_renders_no_policies_and_allows_everything() -> None:
    arch = load_file(ROOT / "architectures" / "netflixoss.yaml")
    open_arch = replace(arch, segmentation=Segmentation(mode="allow-all"))
    objects = render(expand(open_arch), RenderSettings())
    assert not [o for o in objects if o["kind"] == "NetworkPolicy"]
    case = scenario(expand(open_arch))
    matrix = case.matrix(case.model())
    assert set(matrix.cells.values()) == {ALLOWED}


def test_metrics_and_clients_peers_come_from_the_spec() -> None:
    arch = load_file(ROOT / "architectures" / "lamp.yaml")
    custom = replace(arch, segmentation=Segmentation(
        metrics_from=({"namespaceSelector": {"matchLabels": {"team": "observability"}},
                       "podSelector": {"matchLabels": {"app": "prometheus"}}},),
        clients_from=({"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.0.0/24"]}},),
    ))
    case = scenario(expand(custom))
    matrix = case.matrix(case.model())
    assert matrix.cell(METRICS, "webserver") == ALLOWED
    assert matrix.cell(CLIENTS, "www") == ALLOWED
    assert matrix.cell(CLIENTS, "webserver") == BLOCKED
    # A scraper without the pod label is not admitted.
    unlabeled = replace(case, extras=tuple((n, replace(p, labels={})) for n, p in case.extras))
    assert unlabeled.matrix(unlabeled.model()).cell(METRICS, "webserver") == BLOCKED


def test_expected_service_matrix_for_the_local_runner() -> None:
    text = expected_service_matrix(load_file(ROOT / "architectures" / "lamp.yaml"))
    header, *rows = text.splitlines()
    assert header.split()[0] == "-"
    assert "webserver" in header.split()
    row = dict(zip(header.split()[1:], next(r for r in rows if r.startswith("webserver ")).split()[1:]))
    assert (row["memcache"], row["rds-mysql"], row["www"]) == (ALLOWED, ALLOWED, BLOCKED)
