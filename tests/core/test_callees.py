"""Architecture.callees: the dependencies that are calls (services of the architecture), computed once."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from simiankube.contract import to_json
from simiankube.model.spec import parse_text


def test_callees_are_the_services_among_the_dependencies_in_spec_order() -> None:
    arch = parse_text(json.dumps({"arch": "a", "services": [
        {"name": "front", "package": "karyon", "count": 1, "dependencies": ["eureka", "db", "cache"]},
        {"name": "cache", "package": "cache", "count": 1, "dependencies": ["eureka"]},
        {"name": "db", "package": "store", "count": 1, "dependencies": ["db"]},
    ]}))
    assert arch.callees("front") == ("db", "cache")
    assert arch.callees("cache") == ()
    assert arch.callees("db") == ("db",)
    assert arch.edges == (("front", "db"), ("front", "cache"), ("db", "db"))
    with pytest.raises(KeyError):
        arch.callees("eureka")


@dataclass(frozen=True)
class Part:
    b: int
    a: tuple[str, ...] = field(default=())


def test_to_json_writes_the_fields_only_even_when_the_instance_holds_more() -> None:
    part = Part(2, ("x",))
    assert to_json(part) == '{"a":["x"],"b":2}'
    object.__setattr__(part, "cached", "not a field")  # what a cached_property would leave in __dict__
    assert to_json(part) == '{"a":["x"],"b":2}'
