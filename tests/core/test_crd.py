"""The CRD's structural schema agrees with the Python model."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
import yaml
from tests.core.paths import EXAMPLES, ROOT

from simiankube.model.spec import PACKAGES, SpecError, parse_document

CRD = yaml.safe_load((ROOT / "crds" / "architecture.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]


def json_schema(node: Any) -> Any:
    """OpenAPI v3 (as Kubernetes uses it) to JSON Schema: `nullable` becomes a null type."""
    if isinstance(node, list):
        return [json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
    if node.get("type") == "object" and "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False  # the API server prunes (kubectl --validate=strict refuses) unknown fields
    return out


VALIDATOR = jsonschema.Draft7Validator(json_schema(VERSION["schema"]["openAPIV3Schema"]))


def test_crd_names_and_printer_columns() -> None:
    assert CRD["spec"]["group"] == "simiankube.io"
    assert CRD["spec"]["names"]["shortNames"] == ["arch"]
    assert CRD["spec"]["scope"] == "Namespaced"
    assert VERSION["name"] == "v1alpha1" and VERSION["subresources"] == {"status": {}}
    columns = [c["name"] for c in VERSION["additionalPrinterColumns"]]
    assert columns == ["Services", "Instances", "Ready", "Status", "Age"]
    package_enum = VERSION["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["services"]["items"][
        "properties"]["package"]["enum"]
    assert tuple(package_enum) == PACKAGES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_validates_against_the_schema(path: Any) -> None:
    document = yaml.safe_load(path.read_text())
    VALIDATOR.validate(document)
    parse_document(document)


def lamp() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load((ROOT / "architectures" / "lamp.yaml").read_text()))


def set_path(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node: Any = document
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    last = keys[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return document


# Every way to break the schema that we know of: the model must refuse each one too.
SCHEMA_VIOLATIONS = [
    ("spec.services.0.package", "mongodb"),
    ("spec.services.0.count", -1),
    ("spec.services.0.count", "2"),
    ("spec.services.0.regions", -1),
    ("spec.services.0.name", ""),
    ("spec.services.0.dependencies", "memcache"),
    ("spec.services.0.dependencies", [""]),
    ("spec.services.0.behavior", {"errorRate": 1.5}),
    ("spec.services.0.behavior", {"latency": {"distribution": "pareto"}}),
    ("spec.services.0.behavior", {"payloadBytes": -1}),
    ("spec.services.0.behavior", {"timeoutMs": 0}),
    ("spec.services.0.colour", "red"),
    ("spec.services", []),
    ("spec.scale", {"percent": 0}),
    ("spec.scale", {"regions": 0}),
    ("spec.regionNames", []),
    ("spec.regionNames", ["US_EAST"]),
    ("spec.traffic", {"intervalMs": 0}),
    ("spec.traffic", {"putPercent": 101}),
    ("spec.traffic", {"maxHops": 0}),
    ("spec.chaos", {"enabled": "yes"}),
    ("spec.chaos", {"minReady": -1}),
    ("spec.segmentation", {"mode": "open"}),
    ("spec.victim", 3),
    ("spec.args", ["spigo"]),
    ("spec.unknown", 1),
]


@pytest.mark.parametrize(("path", "value"), SCHEMA_VIOLATIONS, ids=lambda v: str(v))
def test_what_the_schema_rejects_the_model_rejects(path: str, value: Any) -> None:
    document = set_path(lamp(), path, value)
    assert list(VALIDATOR.iter_errors(document)), "the schema should reject this"
    with pytest.raises(SpecError):
        parse_document(document)


def schema_nodes(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path or ".", node)]
    for key, child in (node.get("properties") or {}).items():
        nodes += schema_nodes(child, f"{path}.{key}")
    if "items" in node:
        nodes += schema_nodes(node["items"], f"{path}[]")
    return nodes


def test_every_field_has_a_description() -> None:
    """`kubectl explain architecture.spec.services` shows what each field means.

    Except metadata: the API server refuses anything but its type there (ObjectMeta documents itself).
    """
    missing = [path for path, node in schema_nodes(VERSION["schema"]["openAPIV3Schema"])
               if not node.get("description") and path != ".metadata"]
    assert missing == []


@pytest.mark.parametrize(("path", "key"), [(".spec.services", "name"), (".status.conditions", "type")])
def test_keyed_lists_are_maps(path: str, key: str) -> None:
    """Server-side apply merges them by key instead of replacing the whole list."""
    node = dict(schema_nodes(VERSION["schema"]["openAPIV3Schema"]))[path]
    assert node["x-kubernetes-list-type"] == "map" and node["x-kubernetes-list-map-keys"] == [key]
    assert key in node["items"]["required"]
