"""The spec model: every accepted input parses, every problem is reported at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.core.paths import DATA, EXAMPLES, SPIGO

from simiankube.model.spec import (
    DEFAULT_REGION_NAMES,
    PACKAGES,
    SpecError,
    load_file,
    parse_document,
    parse_text,
    to_resource,
)


def cr(services: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "simiankube.io/v1alpha1",
        "kind": "Architecture",
        "metadata": {"name": "demo"},
        "spec": {"services": services, **spec},
    }


def svc(name: str, package: str = "karyon", count: int = 1, regions: int = 1, deps: Any = ()) -> dict[str, Any]:
    return {"name": name, "package": package, "count": count, "regions": regions, "dependencies": list(deps)}


def problems_of(document: Any) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_document(document)
    return caught.value.problems


def test_spigo_files_parse_as_they_are() -> None:
    netflix = load_file(SPIGO / "netflixoss_arch.json")
    assert netflix.name == "netflixoss"
    assert netflix.resource_name == "netflixoss"
    assert netflix.victim == "homepage"
    assert [s.name for s in netflix.services][:2] == ["cassSubscriber", "evcacheSubscriber"]
    cass = netflix.service("cassSubscriber")
    assert (cass.package, cass.count, cass.regions, cass.dependencies) == (
        "priamCassandra", 6, 1, ("cassSubscriber", "eureka"))
    lamp = load_file(SPIGO / "lamp_arch.json")  # holds a tab, which YAML rejects
    assert lamp.victim == ""
    assert load_file(SPIGO / "riak_arch.json").service("riakTS").package == "riak"


def test_every_example_parses_and_imports_equal_to_the_spigo_original() -> None:
    assert len(EXAMPLES) >= 13
    for path in EXAMPLES:
        assert load_file(path).services
    for name in ("lamp", "netflixoss", "riak"):
        original = load_file(SPIGO / f"{name}_arch.json")
        assert load_file(Path(__file__).parents[2] / "architectures" / f"{name}.yaml") == original


@pytest.mark.parametrize(
    ("file", "message"),
    [
        ("testDuplicate_arch.json", 'services[3].name: duplicate service "signup-node" (first at services[2])'),
        ("testMissingDep_arch.json", 'services[3].dependencies[0]: unknown service "signup-nodes"'),
        ("testBadPackage_arch.json", 'services[3].package: unknown package "karyonx"'),
    ],
)
def test_spigo_test_files_fail_with_the_right_message(file: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_file(DATA / file)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(message)
    assert file in str(caught.value)


def test_all_problems_are_reported_at_once_with_field_paths() -> None:
    document = cr(
        [
            svc("a", deps=["missing"]),
            svc("a"),
            svc("b", package="nope"),
            svc("c", count=-2),
            svc("cassSubscriber"),
            svc("cass-subscriber"),
            svc("d", regions=7),
        ],
        victim="ghost",
    )
    problems = problems_of(document)
    assert problems == [
        'spec.services[1].name: duplicate service "a" (first at spec.services[0])',
        f'spec.services[2].package: unknown package "nope" (known: {", ".join(PACKAGES)})',
        "spec.services[3].count: must be >= 0, got -2",
        'spec.services[0].dependencies[0]: unknown service "missing"',
        'spec.services[5].name: "cass-subscriber" and "cassSubscriber" both map to the Kubernetes name '
        '"cass-subscriber"',
        "spec.services[5].regions: \"d\" spans 7 region(s) x spec.scale.regions 1 = 7, but there are only 6 region "
        f"names ({', '.join(DEFAULT_REGION_NAMES)}); add regionNames",
        'spec.victim: not a service: "ghost"',
    ]


def test_unparseable_input_names_line_and_column() -> None:
    with pytest.raises(SpecError) as caught:
        parse_text('{"arch": "x", "services": [\n  {"name": }\n]}', source="bad.json")
    assert caught.value.problems == ["unparseable input at line 2, column 12: Expecting value"]
    with pytest.raises(SpecError) as caught:
        parse_text("kind: Architecture\nspec: [unclosed\n", source="bad.yaml")
    assert caught.value.problems[0].startswith("unparseable input at line 3")


def test_wrong_document_shapes_are_named() -> None:
    assert problems_of([1, 2]) == ["document: expected a mapping, got a list"]
    assert problems_of({"kind": "Deployment"}) == [
        "kind: expected \"Architecture\" or a spigo architecture, got \"Deployment\""]
    doc = cr([svc("a")])
    doc["apiVersion"] = "simiankube.io/v2"
    assert problems_of(doc) == ['apiVersion: expected "simiankube.io/v1alpha1", got "simiankube.io/v2"']
    doc = cr([svc("a")])
    doc["metadata"]["name"] = "Not_Valid"
    assert problems_of(doc) == ['metadata.name: must be a lowercase RFC 1123 name, got "Not_Valid"']


def test_types_and_unknown_fields_are_reported() -> None:
    problems = problems_of(cr([{**svc("a"), "count": "three", "colour": "red"}], traffic={"intervalMs": 0}))
    assert problems == [
        "spec.services[0].colour: unknown field",
        'spec.services[0].count: expected an integer, got "three"',
        "spec.traffic.intervalMs: must be between 0.1 and 3600000, got 0",
    ]
    assert problems_of(cr([{**svc("a"), "count": True}])) == ["spec.services[0].count: expected an integer, got true"]


def test_spigo_legalities_eureka_self_dependency_null_dependencies_extras() -> None:
    arch = parse_document(
        {
            "arch": "legal",
            "version": "arch-0.1",
            "args": "[spigo -a legal]",
            "date": "2015-04-26T23:52:45+12:00",
            "victim": "",
            "services": [
                {"name": "ring", "package": "priamCassandra", "count": 3, "regions": 1,
                 "dependencies": ["ring", "eureka"], "machine": "ecs:4", "container": "img/ring", "process": "java"},
                {"name": "app", "package": "karyon", "count": 1, "regions": 1, "dependencies": None},
            ],
        }
    )
    assert arch.service("ring").dependencies == ("ring", "eureka")
    assert arch.service("app").dependencies == ()
    assert dict(arch.service("ring").extras) == {"machine": "ecs:4", "container": "img/ring", "process": "java"}
    assert arch.warnings == ()  # a self-dependency is not a cycle worth a warning


def test_absent_regions_and_count_are_zero_as_in_spigo() -> None:
    """spigo's compose importer writes traffic sources without `regions`: Go's zero value, one global instance."""
    arch = parse_document({"arch": "c", "services": [
        {"name": "www", "package": "denominator", "dependencies": ["app"]},
        {"name": "app", "package": "monolith", "count": 3, "regions": 1},
    ]})
    assert (arch.service("www").regions, arch.service("www").count) == (0, 0)


def test_cycles_are_warnings_not_errors() -> None:
    arch = parse_document(cr([svc("dal", "staash", deps=["db"]), svc("db", "store", deps=["dal"]), svc("x")]))
    assert arch.warnings == (
        "spec.services: dependency cycle dal -> db -> dal; allowed, bounded at run time by deadlines and the hop limit",
    )


def test_behaviour_traffic_chaos_and_segmentation_blocks() -> None:
    arch = parse_document(
        cr(
            [{**svc("a", deps=["b"]), "behavior": {"latency": {"distribution": "normal", "meanMs": 3, "stddevMs": 1},
                                                   "errorRate": 0.1, "payloadBytes": 512}},
             svc("b", "store")],
            traffic={"intervalMs": 5, "putPercent": 20},
            chaos={"enabled": True, "victim": "b", "minReady": 2, "dryRun": True},
            segmentation={"mode": "allow-all"},
            scale={"percent": 50, "regions": 2},
            regionNames=["r1", "r2"],
        )
    )
    behavior = arch.service("a").behavior
    assert (behavior.latency.distribution, behavior.latency.mean_ms, behavior.error_rate, behavior.payload_bytes) == (
        "normal", 3.0, 0.1, 512)
    assert (arch.traffic.interval_ms, arch.traffic.put_percent) == (5.0, 20.0)
    assert (arch.chaos.enabled, arch.chaos.victim, arch.chaos.min_ready, arch.chaos.dry_run) == (True, "b", 2, True)
    assert arch.segmentation.mode == "allow-all"
    assert (arch.scale.percent, arch.scale.regions, arch.region_names) == (50, 2, ("r1", "r2"))
    assert problems_of(cr([svc("a")], chaos={"victim": "zz"}, segmentation={"mode": "open"})) == [
        'spec.chaos.victim: not a service: "zz"',
        'spec.segmentation.mode: must be one of enforced, allow-all, got "open"',
    ]


def test_command_line_scale_is_validated() -> None:
    arch = parse_document(cr([svc("a")]))
    assert arch.with_scale(regions=6).scale.regions == 6
    with pytest.raises(SpecError) as caught:
        arch.with_scale(percent=0, regions=7)
    assert caught.value.problems[0] == "--scale: percent must be >= 1, got 0"
    assert caught.value.problems[1].startswith('services[0].regions: "a" spans 1 region(s) x --regions 7 = 7')


def test_import_round_trips_through_the_resource(tmp_path: Path) -> None:
    original = load_file(SPIGO / "riak_arch.json")
    resource = to_resource(original)
    assert resource["metadata"] == {"name": "riak"}
    path = tmp_path / "riak.yaml"
    path.write_text(yaml.safe_dump(resource))
    assert load_file(path) == original
    path.write_text(json.dumps(resource))
    assert load_file(path) == original
