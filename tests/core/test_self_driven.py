"""Which services drive themselves: every declared edge must be reachable from some trace starter."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.core.paths import EXAMPLES, SPIGO

from simiankube import contract
from simiankube.contract import NanoserviceConfig
from simiankube.model.generate import generate
from simiankube.model.spec import (
    TRAFFIC_SOURCE_PACKAGES,
    Architecture,
    SpecError,
    load_file,
    parse_document,
    self_driven,
)
from simiankube.model.topology import expand
from simiankube.render import RenderSettings, render
from simiankube.render.nanoconfig import KEEP_WARM_SECONDS


def arch_of(*services: tuple[str, str, list[str]]) -> Architecture:
    return parse_document({
        "apiVersion": "simiankube.io/v1alpha1", "kind": "Architecture", "metadata": {"name": "demo"},
        "spec": {"services": [{"name": n, "package": p, "count": 1, "regions": 1, "dependencies": d}
                              for n, p, d in services]},
    })


def unexercised_edges(arch: Architecture, starters: set[str]) -> list[tuple[str, str]]:
    """Declared edges whose caller no trace starter reaches."""
    reached: set[str] = set()
    stack = list(starters)
    while stack:
        name = stack.pop()
        if name not in reached:
            reached.add(name)
            stack.extend(d for d in arch.service(name).dependencies if arch.has_service(d))
    return [(s.name, d) for s in arch.services for d in s.dependencies
            if arch.has_service(d) and s.name not in reached]


def sources(arch: Architecture) -> set[str]:
    return {s.name for s in arch.services if s.package in TRAFFIC_SOURCE_PACKAGES}


@pytest.mark.parametrize(("file", "expected"), [
    ("lamp_arch.json", ()),
    ("netflixoss_arch.json", ()),
    ("riak_arch.json", ()),
    ("composeV2_arch.json", ("front-tier", "back-tier")),  # back-tier calls worker
    ("yogi_arch.json", ("consumer-ranger", "consumer-cindy", "legacyAPI-elb")),
    ("edge_arch.json", ("sporangiole",)),
    ("simpleV2_arch.json", ("back",)),  # `db` calls nothing: nothing to drive
    ("testyaml_arch.json", ("nginx",)),  # no denominator at all: the one nobody calls drives web → db
])
def test_spigos_own_shapes(file: str, expected: tuple[str, ...]) -> None:
    arch = load_file(SPIGO / file)
    assert self_driven(arch.services) == expected
    assert arch.self_driven == frozenset(expected)


def test_every_vendored_and_example_architecture_ends_with_every_edge_exercised() -> None:
    files = [*sorted(SPIGO.glob("*_arch.json")), *EXAMPLES]
    assert len(files) > 15
    for path in files:
        arch = load_file(path)
        assert unexercised_edges(arch, sources(arch)) == [] or arch.self_driven, path
        assert unexercised_edges(arch, sources(arch) | arch.self_driven) == [], path


def test_a_cycle_nobody_outside_calls_is_driven_by_its_first_member_in_spec_order() -> None:
    arch = arch_of(("www", "denominator", ["a"]), ("a", "karyon", []),
                   ("x", "karyon", ["y"]), ("y", "karyon", ["z"]), ("z", "karyon", ["x"]),
                   ("q", "karyon", ["r"]), ("r", "karyon", ["q"]))
    assert self_driven(arch.services) == ("x", "q")


def test_services_nobody_calls_come_first_then_cycles() -> None:
    # c → d ↔ e is reached from c, nobody calls c; f ↔ g is a cycle nobody outside calls.
    arch = arch_of(("f", "karyon", ["g"]), ("g", "karyon", ["f"]), ("c", "karyon", ["d"]),
                   ("d", "karyon", ["e"]), ("e", "karyon", ["d"]))
    assert self_driven(arch.services) == ("c", "f")


def test_a_self_call_does_not_count_as_being_called() -> None:
    arch = arch_of(("ring", "priamCassandra", ["ring", "eureka"]), ("log", "store", []))
    assert self_driven(arch.services) == ("ring",)  # `log` calls nothing; eureka is the registry, no service


def test_reached_services_and_traffic_sources_never_drive_themselves() -> None:
    arch = arch_of(("www", "denominator", ["lb"]), ("lb", "elb", ["app"]), ("app", "karyon", ["lb"]))
    assert self_driven(arch.services) == ()


def test_the_rule_is_deterministic_and_generated_shapes_need_nothing() -> None:
    arch = load_file(SPIGO / "edge_arch.json")
    assert self_driven(arch.services) == self_driven(tuple(arch.services))
    for seed in range(5):
        generated = parse_document(generate(40, seed=seed))
        assert self_driven(generated.services) == ()


def test_starts_traces_agrees_with_packages_and_the_rule() -> None:
    arch = load_file(SPIGO / "composeV2_arch.json")
    starters = [s.name for s in arch.services if arch.starts_traces(s.name)]
    assert starters == ["www-result-app", "www-voting-app", "front-tier", "back-tier"]


def test_the_render_gives_self_driven_services_the_architectures_rate_spread_over_their_instances() -> None:
    arch = load_file(SPIGO / "yogi_arch.json").with_scale(regions=2)
    objects = render(expand(arch), RenderSettings())
    traffic = {}
    for o in objects:
        if o["kind"] == "ConfigMap":
            config = NanoserviceConfig.from_json(o["data"][contract.CONFIG_KEY])
            traffic[(config.service, config.region)] = config.traffic
            # every instance that calls something keeps its edges warm; a leaf has none
            assert config.keep_warm_s == (KEEP_WARM_SECONDS if config.dependencies else 0.0), config.service
    interval = arch.traffic.interval_ms
    assert traffic[("www", contract.GLOBAL_REGION)] == arch.traffic  # the denominator: every tick, as before
    for region in ("us-east-1", "us-west-2"):
        # 3 instances per region x 2 regions: the service as a whole starts a trace every `interval`
        for name in ("consumer-ranger", "consumer-cindy"):
            assert traffic[(name, region)] == replace(arch.traffic, interval_ms=interval * 6), name
        assert traffic[("legacyAPI-elb", region)] == replace(arch.traffic, interval_ms=interval * 2)  # one per region
        for name in ("cass", "kafka", "dmz", "legacyAPI", "yogi", "ext-dmz-elb"):
            assert traffic[(name, region)] is None, name


def test_spec_traffic_self_driven_false_keeps_spigos_sources_only_and_bad_values_are_named() -> None:
    document = {"apiVersion": "simiankube.io/v1alpha1", "kind": "Architecture", "metadata": {"name": "demo"},
                "spec": {"arch": "demo", "traffic": {"selfDriven": False},
                         "services": [{"name": "job", "package": "karyon", "dependencies": ["db"]},
                                      {"name": "db", "package": "store"}]}}
    arch = parse_document(document)
    assert arch.self_driven == frozenset() and not arch.starts_traces("job")
    configs = [NanoserviceConfig.from_json(o["data"][contract.CONFIG_KEY])
               for o in render(expand(arch), RenderSettings()) if o["kind"] == "ConfigMap"]
    assert [(c.traffic, c.keep_warm_s) for c in configs] == [(None, 0.0), (None, 0.0)]
    document["spec"]["traffic"] = {"selfDriven": "no"}
    with pytest.raises(SpecError) as caught:
        parse_document(document)
    assert caught.value.problems == ['spec.traffic.selfDriven: expected a boolean, got "no"']
    del document["spec"]["traffic"]
    assert parse_document(document).self_driven == frozenset({"job"})
