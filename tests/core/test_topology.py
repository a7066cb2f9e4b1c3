"""Topology expansion: spigo's rules with its defects fixed."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from tests.core.paths import SPIGO

from simiankube import contract
from simiankube.model.naming import bounded, kube_name
from simiankube.model.spec import SpecError, load_file, parse_document
from simiankube.model.topology import expand, scaled_count


@pytest.mark.parametrize(("regions", "instances"), [(1, 65), (2, 129), (6, 385)])
def test_netflixoss_instance_counts(regions: int, instances: int) -> None:
    arch = load_file(SPIGO / "netflixoss_arch.json").with_scale(regions=regions)
    assert len(expand(arch).instances) == instances


def arch_of(services: list[dict[str, Any]], **spec: Any) -> Any:
    return parse_document({"arch": "t", "services": services, **spec})


def test_global_cross_zone_and_zoned_instances() -> None:
    topology = expand(
        arch_of(
            [
                {"name": "www", "package": "denominator", "count": 0, "regions": 0, "dependencies": ["lb"]},
                {"name": "lb", "package": "elb", "count": 0, "regions": 2, "dependencies": ["app"]},
                {"name": "app", "package": "karyon", "count": 4, "regions": 2},
            ]
        )
    )
    www, = topology.placements_of("www")
    assert (www.region, www.workload, [i.zone for i in www.instances]) == (
        contract.GLOBAL_REGION, "t-www", [contract.ANY_ZONE])
    assert [(p.region, p.replicas, p.cross_zone) for p in topology.placements_of("lb")] == [
        ("us-east-1", 1, True), ("us-west-2", 1, True)]
    app = topology.placements_of("app")
    assert [p.workload for p in app] == ["t-app-us-east-1", "t-app-us-west-2"]
    assert [i.zone for i in app[0].instances] == ["zoneA", "zoneB", "zoneC", "zoneA"]
    assert [i.name for i in app[0].instances] == [f"t-app-us-east-1-{n}" for n in range(4)]
    assert (app[1].instances[2].region, app[1].instances[2].zone) == ("us-west-2", "zoneC")
    assert topology.regions == ("us-east-1", "us-west-2", contract.GLOBAL_REGION)


def test_scaling_floors_at_one_and_never_makes_a_singleton_cross_zone() -> None:
    assert [scaled_count(c, 50) for c in (1, 2, 3, 18)] == [1, 1, 1, 9]
    arch = arch_of([{"name": "db", "package": "store", "count": 1, "regions": 1}], scale={"percent": 10})
    db, = expand(arch).placements
    assert db.replicas == 1
    assert not db.cross_zone
    assert db.instances[0].zone == "zoneA"


def test_zone_spread_is_even() -> None:
    arch = load_file(SPIGO / "netflixoss_arch.json")
    homepage, = expand(arch).placements_of("homepage")
    assert Counter(i.zone for i in homepage.instances) == {"zoneA": 8, "zoneB": 8, "zoneC": 8}


@pytest.mark.parametrize(
    ("spigo", "kube"),
    [("cassSubscriber", "cass-subscriber"), ("riakTS", "riak-ts"), ("ingestMQ", "ingest-mq"),
     ("www-elb", "www-elb"), ("rds_MySQL", "rds-my-sql"), ("HTTPServer", "http-server"), ("9lives", "s-9lives"),
     ("a..b", "a-b"), ("--x--", "x")],
)
def test_kube_names(spigo: str, kube: str) -> None:
    assert kube_name(spigo) == kube


def test_long_names_are_bounded_and_stay_unique() -> None:
    a, b = "x" * 60 + "a", "x" * 60 + "b"
    assert len(bounded(a)) == 52
    assert bounded(a) != bounded(b)
    assert bounded("short") == "short"


def test_workload_name_collisions_are_refused() -> None:
    arch = arch_of(
        [
            {"name": "a", "package": "karyon", "count": 1, "regions": 1},
            {"name": "a-us-east-1", "package": "karyon", "count": 1, "regions": 0},
        ]
    )
    with pytest.raises(SpecError) as caught:
        expand(arch)
    assert caught.value.problems == [
        'services[1].name: "a-us-east-1" gets the workload name "t-a-us-east-1", which service "a" has already; '
        "rename one of them"]
