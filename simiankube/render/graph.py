"""The architecture as a graph, for the tools spigo wrote it for: GraphJSON (simianviz), GraphML (yEd,
Gephi) and Graphviz DOT — the declared graph, or the graph a run observed (Zipkin dependency links).

Pure functions like the Kubernetes render: no clock, sorted, deterministic. Node ids in GraphML are
`n0`, `n1`, ... (service names need not be XML name tokens); names are data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from simiankube import contract
from simiankube.model.spec import Architecture
from simiankube.model.topology import Instance, Topology

GRAPHJSON_VERSION = "spigo-0.4"  # what spigo writes and simianviz reads
ZONE_PREFERRING = frozenset({"zuul", "karyon"})  # spigo connects these to their own zone's instances only


@dataclass(frozen=True)
class Node:
    id: str  # service name, or instance name
    service: str
    package: str
    region: str = ""
    zone: str = ""


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    calls: int | None = None  # observed graphs only
    errors: int | None = None


@dataclass(frozen=True)
class Graph:
    name: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]


@dataclass(frozen=True)
class Link:
    """A Zipkin dependency link: calls from one service to another, as Zipkin's /api/v2/dependencies."""

    parent: str
    child: str
    call_count: int
    error_count: int

    def to_json(self) -> dict[str, Any]:
        return {"parent": self.parent, "child": self.child, "callCount": self.call_count,
                "errorCount": self.error_count}


# -- building -----------------------------------------------------------------------


def build_service_graph(arch: Architecture) -> Graph:
    """One node per service, one edge per declared dependency (eureka, when not a service, is left out)."""
    names = {s.name for s in arch.services}
    nodes = tuple(Node(s.name, s.name, s.package) for s in arch.services)
    edges = tuple(Edge(s.name, d) for s in arch.services for d in s.dependencies if d in names)
    return Graph(arch.name, nodes, edges)


def build_instance_graph(topology: Topology) -> Graph:
    """spigo's granularity: one node per instance, an edge to every instance it may call — its own region's
    instances of each dependency (every region for a global caller or where the dependency has none), in its
    own zone only for zuul and karyon when that zone has one (spigo's zone-local routers)."""
    by_service: dict[str, list[Instance]] = {}
    for instance in topology.instances:
        by_service.setdefault(instance.service.name, []).append(instance)
    nodes = tuple(Node(i.name, i.service.name, i.service.package, i.region, i.zone) for i in topology.instances)
    edges: list[Edge] = []
    for caller in topology.instances:
        for dep in caller.service.dependencies:
            targets = [t for t in by_service.get(dep, []) if t.name != caller.name]
            local = [t for t in targets if t.region == caller.region]
            targets = local or targets
            if caller.service.package in ZONE_PREFERRING:
                targets = [t for t in targets if _same_zone(caller.zone, t.zone)] or targets
            edges.extend(Edge(caller.name, t.name) for t in targets)
    return Graph(topology.architecture.name, nodes, tuple(edges))


def _same_zone(a: str, b: str) -> bool:
    return a == b or contract.ANY_ZONE in (a, b)


def dependency_links(spans: Iterable[dict[str, Any]]) -> list[Link]:
    """Zipkin dependency links from spans: every CLIENT span is one call from its service to the remote
    service; an answer of 500 or more (or an `error` tag) is an error. Sorted by parent, child."""
    counts: dict[tuple[str, str], list[int]] = {}
    for span in spans:
        if span.get("kind") != "CLIENT":
            continue
        parent = (span.get("localEndpoint") or {}).get("serviceName")
        child = (span.get("remoteEndpoint") or {}).get("serviceName")
        if not parent or not child:
            continue
        tags = span.get("tags") or {}
        status = str(tags.get("http.status_code", ""))
        failed = "error" in tags or (status.isdigit() and int(status) >= 500)
        entry = counts.setdefault((parent, child), [0, 0])
        entry[0] += 1
        entry[1] += 1 if failed else 0
    return [Link(p, c, n, e) for (p, c), (n, e) in sorted(counts.items())]


def read_spans(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Spans of a Zipkin file: JSON lines (what simiankube writes) or one JSON array; blank lines skipped."""
    text = "".join(lines)
    if text.lstrip().startswith("["):
        spans = json.loads(text)
        return [s for s in spans if isinstance(s, dict)]
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                span = json.loads(line)
            except ValueError as err:
                raise ValueError(f"line {number}: not a JSON span: {err}") from None
            if isinstance(span, dict):
                found.append(span)
    return found


def build_observed_graph(arch: Architecture, links: Iterable[Link]) -> Graph:
    """The service graph a run observed: the edges are the links with their call and error counts."""
    links = list(links)
    packages = {s.name: s.package for s in arch.services}
    names = [s.name for s in arch.services]
    names += sorted({n for link in links for n in (link.parent, link.child)} - set(names))
    nodes = tuple(Node(n, n, packages.get(n, "")) for n in names)
    edges = tuple(Edge(link.parent, link.child, link.call_count, link.error_count) for link in links)
    return Graph(arch.name, nodes, edges)


# -- writing ------------------------------------------------------------------------


def to_graphjson(graph: Graph, args: str = "") -> str:
    """spigo's GraphJSON (`spigo-0.4`), which simianviz reads: nodes, then edges `e1`, `e2`, ...; observed
    edges carry `calls` and `errors` too."""
    elements: list[dict[str, Any]] = [
        {"node": n.id, "package": n.package, **({"metadata": f"zone/{n.region}/{n.zone}"} if n.region else {})}
        for n in graph.nodes
    ]
    for number, e in enumerate(graph.edges, 1):
        element: dict[str, Any] = {"edge": f"e{number}", "source": e.source, "target": e.target}
        if e.calls is not None:
            element.update(calls=e.calls, errors=e.errors)
        elements.append(element)
    document = {"arch": graph.name, "version": GRAPHJSON_VERSION, "args": args, "graph": elements}
    return json.dumps(document, indent=1) + "\n"


_GRAPHML_KEYS = (  # (id, for, attr.name, attr.type)
    ("name", "node", "name", "string"),
    ("service", "node", "service", "string"),
    ("package", "node", "package", "string"),
    ("region", "node", "region", "string"),
    ("zone", "node", "zone", "string"),
    ("calls", "edge", "calls", "long"),
    ("errors", "edge", "errors", "long"),
)


def to_graphml(graph: Graph) -> str:
    """GraphML 1.0 (valid against graphml.xsd), directed; yEd and Gephi show the data keys as properties."""
    ids = {n.id: f"n{i}" for i, n in enumerate(graph.nodes)}
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<graphml xmlns="http://graphml.graphdrawing.org/xmlns"',
        '    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"',
        '    xsi:schemaLocation="http://graphml.graphdrawing.org/xmlns '
        'http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">',
    ]
    lines += [f'  <key id="{k}" for="{f}" attr.name="{a}" attr.type="{t}"/>' for k, f, a, t in _GRAPHML_KEYS]
    lines.append(f'  <graph id="{_token(graph.name)}" edgedefault="directed">')
    for node in graph.nodes:
        data = {"name": node.id, "service": node.service, "package": node.package, "region": node.region,
                "zone": node.zone}
        lines.append(f'    <node id="{ids[node.id]}">' + _data(data) + "</node>")
    for number, edge in enumerate(graph.edges):
        data = {} if edge.calls is None else {"calls": str(edge.calls), "errors": str(edge.errors)}
        lines.append(f'    <edge id="e{number}" source="{ids[edge.source]}" target="{ids[edge.target]}">'
                     + _data(data) + "</edge>")
    lines += ["  </graph>", "</graphml>"]
    return "\n".join(lines) + "\n"


def _data(values: dict[str, str]) -> str:
    return "".join(f'<data key="{k}">{escape(v)}</data>' for k, v in values.items() if v)


def _token(name: str) -> str:
    """An XML name token for the graph id (letters, digits, . - _ :)."""
    return "".join(c if c.isalnum() or c in ".-_:" else "_" for c in name) or "architecture"


def to_dot(graph: Graph) -> str:
    """Graphviz DOT: a box per node labelled service and package, an arrow per edge (labelled with the call
    count when observed)."""
    lines = [f"digraph {_dot_id(graph.name)} {{", "  rankdir=LR;", "  node [shape=box, fontname=Helvetica];"]
    for node in graph.nodes:
        label = f"{node.id}\\n{node.package}" if node.package else node.id
        lines.append(f"  {_dot_id(node.id)} [label={_dot_id(label)}];")
    for edge in graph.edges:
        attrs = "" if edge.calls is None else f" [label={_dot_id(f'{edge.calls} calls' + (f', {edge.errors} errors' if edge.errors else ''))}]"
        lines.append(f"  {_dot_id(edge.source)} -> {_dot_id(edge.target)}{attrs};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_id(text: str) -> str:
    """A quoted DOT id: in DOT's quoted strings only `\\"` is an escape, every other character stays as it is."""
    return '"' + text.replace('"', '\\"') + '"'


def to_links_json(links: Iterable[Link]) -> str:
    return json.dumps([link.to_json() for link in links], indent=1) + "\n"


FORMATS = ("graphjson", "graphml", "dot", "links")
