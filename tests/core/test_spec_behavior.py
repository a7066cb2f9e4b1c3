"""`behavior.fanout` and `behavior.hitRate`: defaults as spigo, clear errors naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from simiankube.model.spec import SpecError, parse_document


def arch(behavior: dict[str, Any], package: str) -> dict[str, Any]:
    return {
        "apiVersion": "simiankube.io/v1alpha1", "kind": "Architecture", "metadata": {"name": "demo"},
        "spec": {"services": [
            {"name": "db", "package": "store", "count": 1, "regions": 1},
            {"name": "web", "package": package, "count": 1, "regions": 1, "dependencies": ["db"],
             "behavior": behavior},
        ]},
    }


def test_defaults_are_spigos() -> None:
    web = parse_document(arch({}, "karyon")).service("web")
    assert (web.behavior.fanout, web.behavior.hit_rate) == ("one", 1.0)


def test_fanout_and_hit_rate_are_read() -> None:
    assert parse_document(arch({"fanout": "all"}, "monolith")).service("web").behavior.fanout == "all"
    assert parse_document(arch({"hitRate": 0.4}, "cache")).service("web").behavior.hit_rate == 0.4


@pytest.mark.parametrize(("behavior", "package", "message"), [
    ({"fanout": "some"}, "karyon", "spec.services[1].behavior.fanout: must be one of one, all, got \"some\""),
    ({"fanout": "all"}, "store", "spec.services[1].behavior.fanout: applies to packages elb, karyon, monolith, "
                                 "zuul only, not \"store\""),
    ({"hitRate": 1.2}, "cache", "spec.services[1].behavior.hitRate: must be between 0 and 1, got 1.2"),
    ({"hitRate": 0.5}, "karyon", "spec.services[1].behavior.hitRate: applies to packages cache, priamCassandra, "
                                 "riak, store, volume only, not \"karyon\""),
])
def test_bad_values_name_the_field(behavior: dict[str, Any], package: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_document(arch(behavior, package))
    assert message in caught.value.problems
