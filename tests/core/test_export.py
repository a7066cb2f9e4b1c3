"""`simiankube export`: graphs opened by the tools they are for — GraphML against its XSD, DOT through
Graphviz, GraphJSON as simianviz reads it, Zipkin dependency links from real spans."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from simiankube.model.spec import load_file
from simiankube.model.topology import expand
from simiankube.render.graph import (
    build_instance_graph,
    build_observed_graph,
    build_service_graph,
    dependency_links,
    read_spans,
    to_dot,
    to_graphjson,
    to_graphml,
)
from tests.core.paths import DATA, ROOT
from tests.core.test_cli import simiankube

SCHEMA = xmlschema.XMLSchema(str(DATA / "graphml" / "graphml.xsd"))
LAMP = ROOT / "architectures" / "lamp.yaml"
NETFLIXOSS = ROOT / "architectures" / "netflixoss.yaml"


def span(kind: str, local: str, remote: str = "", status: int = 200) -> dict[str, Any]:
    s: dict[str, Any] = {"traceId": "1" * 32, "id": "2" * 16, "kind": kind, "localEndpoint": {"serviceName": local},
                         "tags": {"http.status_code": str(status)}}
    if remote:
        s["remoteEndpoint"] = {"serviceName": remote}
    return s


SPANS = [span("CLIENT", "webserver", "memcache")] * 3 + [span("CLIENT", "webserver", "rds-mysql", 502)] * 2 + [
    span("SERVER", "memcache"), span("CLIENT", "www", "webserver-elb")]


def graphs() -> list[Any]:
    arch = load_file(NETFLIXOSS)
    return [build_service_graph(arch), build_instance_graph(expand(arch)),
            build_observed_graph(arch, dependency_links(SPANS))]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["service", "instance", "observed"])
def test_graphml_is_valid_against_the_graphml_schema(index: int) -> None:
    graph = graphs()[index]
    document = to_graphml(graph)
    SCHEMA.validate(document)
    assert document.count("<node ") == len(graph.nodes) and document.count("<edge ") == len(graph.edges)


def test_graphml_that_breaks_the_schema_is_caught() -> None:
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        SCHEMA.validate(to_graphml(graphs()[0]).replace('edgedefault="directed"', 'edgedefault="sideways"'))


@pytest.mark.parametrize("index", [0, 1, 2], ids=["service", "instance", "observed"])
def test_dot_is_read_by_graphviz(index: int, tmp_path: Path) -> None:
    dot = shutil.which("dot")
    assert dot, "Graphviz `dot` is not installed: scripts/bootstrap.sh installs the Debian package graphviz"
    graph = graphs()[index]
    source = tmp_path / "g.dot"
    source.write_text(to_dot(graph))
    result = subprocess.run([dot, "-Tjson", str(source)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    laid_out = json.loads(result.stdout)
    assert len(laid_out.get("objects", [])) == len(graph.nodes) and len(laid_out.get("edges", [])) == len(graph.edges)


def test_dot_quotes_what_graphviz_would_misread() -> None:
    dot = shutil.which("dot")
    assert dot
    from simiankube.render.graph import Edge, Graph, Node
    graph = Graph('a "b"', (Node('x"y', 'x"y', "store"), Node("back\\slash", "b", "elb")),
                  (Edge("back\\slash", 'x"y', 3, 1),))
    result = subprocess.run([dot, "-Tjson"], input=to_dot(graph), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    names = sorted(o["name"] for o in json.loads(result.stdout)["objects"])
    assert names == sorted(['x"y', "back\\slash"])


def test_graphjson_is_spigos_format() -> None:
    arch = load_file(LAMP)
    document = json.loads(to_graphjson(build_instance_graph(expand(arch)), "simiankube export lamp"))
    assert (document["arch"], document["version"]) == ("lamp", "spigo-0.4")
    nodes = {e["node"]: e["package"] for e in document["graph"] if "node" in e}
    edges = [e for e in document["graph"] if "edge" in e]
    assert len(nodes) == 23 and all(e["source"] in nodes and e["target"] in nodes for e in edges)
    assert [e["edge"] for e in edges] == [f"e{i}" for i in range(1, len(edges) + 1)]
    web = [n for n in nodes if "-webserver-" in n and "elb" not in n]
    assert len(web) == 18
    # a monolith reaches every instance of its dependencies, in every zone: 1 memcache + 2 mysql each
    assert sum(1 for e in edges if e["source"] in web) == 18 * 3


def test_instance_graph_keeps_zuul_in_its_zone() -> None:
    graph = build_instance_graph(expand(load_file(NETFLIXOSS)))
    zones = {n.id: (n.service, n.zone) for n in graph.nodes}
    proxy = [e for e in graph.edges if zones[e.source][0] == "wwwproxy"]
    assert proxy and all(zones[e.source][1] == zones[e.target][1] for e in proxy)
    per_proxy = sum(1 for e in proxy if e.source == proxy[0].source)
    assert per_proxy == 6 + 8  # login and homepage instances of its zone (18 and 24 over 3 zones)


def test_dependency_links_count_client_calls_and_errors() -> None:
    links = [link.to_json() for link in dependency_links(SPANS)]
    assert links == [
        {"parent": "webserver", "child": "memcache", "callCount": 3, "errorCount": 0},
        {"parent": "webserver", "child": "rds-mysql", "callCount": 2, "errorCount": 2},
        {"parent": "www", "child": "webserver-elb", "callCount": 1, "errorCount": 0},
    ]
    assert read_spans(["[", json.dumps(SPANS[0]), "]"]) == [SPANS[0]]
    with pytest.raises(ValueError, match="line 2"):
        read_spans([json.dumps(SPANS[0]) + "\n", "{nope\n"])


def test_export_of_a_run_counts_the_calls_it_observed(tmp_path: Path) -> None:
    out = tmp_path / "links.json"
    result = simiankube("export", str(LAMP), "--run", "3", "--format", "links", "-f", str(out))
    assert result.returncode == 0, result.stderr
    links = {(link["parent"], link["child"]): link["callCount"] for link in json.loads(out.read_text())}
    assert set(links) >= {("www", "webserver-elb"), ("webserver-elb", "webserver"), ("webserver", "memcache"),
                          ("webserver", "rds-mysql")}
    web = links[("webserver", "memcache")] + links[("webserver", "rds-mysql")]
    assert web > 100 and abs(links[("webserver", "memcache")] / web - 1 / 3) < 0.1


def test_observed_graphml_from_a_zipkin_file(tmp_path: Path) -> None:
    spans = tmp_path / "spans.jsonl"
    spans.write_text("".join(json.dumps(s) + "\n" for s in SPANS))
    result = simiankube("export", str(LAMP), "--zipkin", str(spans), "--format", "graphml")
    assert result.returncode == 0, result.stderr
    SCHEMA.validate(result.stdout)
    assert '<data key="calls">3</data><data key="errors">0</data>' in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "links"], "--format links: needs the calls of a run"),
    (["--zipkin", "/nonexistent/spans.jsonl"], "--zipkin: cannot read /nonexistent/spans.jsonl"),
])
def test_bad_exports_say_why(args: list[str], message: str) -> None:
    result = simiankube("export", str(LAMP), *args)
    assert result.returncode == 1 and message in result.stderr and result.stdout == ""


def test_help() -> None:
    assert "graphml" in simiankube("export", "--help").stdout
