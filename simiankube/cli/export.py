"""`simiankube export`: an architecture's graph for simianviz (GraphJSON), yEd/Gephi (GraphML) or Graphviz
(DOT), declared or as a run observed it."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from simiankube.cli.common import add_file_argument, add_scale_arguments, load
from simiankube.model.spec import Architecture, SpecError
from simiankube.model.topology import expand
from simiankube.render.graph import (
    FORMATS,
    Graph,
    Link,
    build_instance_graph,
    build_observed_graph,
    build_service_graph,
    dependency_links,
    read_spans,
    to_dot,
    to_graphjson,
    to_graphml,
    to_links_json,
)


def observed_links(arch: Architecture, args: argparse.Namespace) -> list[Link] | None:
    """Links from --zipkin FILE, or from a local run of --run seconds; None for the declared graph."""
    if args.zipkin:
        try:
            with open(args.zipkin, encoding="utf-8") as lines:
                return dependency_links(read_spans(lines))
        except OSError as err:
            raise SpecError([f"--zipkin: cannot read {args.zipkin}: {err.strerror}"]) from err
        except ValueError as err:
            raise SpecError([f"--zipkin: {args.zipkin}: {err}"]) from err
    if args.run:
        from simiankube.cli.run import parse_duration
        from simiankube.localrun.runner import RunError, run_architecture

        with tempfile.TemporaryDirectory(prefix="simiankube-export-") as tmp:
            zipkin = str(Path(tmp) / "spans.jsonl")
            try:
                asyncio.run(run_architecture(arch, duration=parse_duration(args.run), seed=args.seed, chaos=False,
                                             zipkin_file=zipkin, workers=1, progress=sys.stderr))
            except RunError as err:
                raise SpecError([f"--run: {err}"]) from err
            written = Path(zipkin)
            return dependency_links(read_spans(written.read_text(encoding="utf-8").splitlines(keepends=True))
                                    if written.exists() else [])
    return None


def cmd_export(args: argparse.Namespace) -> int:
    arch = load(args)
    links = observed_links(arch, args)
    if args.format == "links":
        if links is None:
            raise SpecError(["--format links: needs the calls of a run: give --zipkin FILE or --run DURATION"])
        text = to_links_json(links)
    else:
        graph: Graph
        if links is not None:
            graph = build_observed_graph(arch, links)
        elif args.level == "instance":
            graph = build_instance_graph(expand(arch))
        else:
            graph = build_service_graph(arch)
        text = {"graphjson": lambda: to_graphjson(graph, f"simiankube export {args.file}"),
                "graphml": lambda: to_graphml(graph), "dot": lambda: to_dot(graph)}[args.format]()
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def register(commands: Any) -> None:
    p = commands.add_parser(
        "export", help="write an architecture's graph: GraphJSON, GraphML, DOT, Zipkin dependency links",
        description="Write the graph of an architecture for simianviz (graphjson, spigo's GraphJSON), yEd or "
                    "Gephi (graphml), Graphviz (dot). With --zipkin or --run it is the graph a run observed, "
                    "each edge with its call and error counts; --format links writes Zipkin's dependency links.",
    )
    add_file_argument(p)
    add_scale_arguments(p)
    p.add_argument("--format", choices=FORMATS, default="graphjson", help="output format (default %(default)s)")
    p.add_argument("--level", choices=("service", "instance"), default="service",
                   help="declared graph: a node per service, or per instance as spigo draws it (default service)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--zipkin", metavar="FILE", help="the observed graph of a run's Zipkin spans "
                                                         "(JSON lines as simiankube run writes, or a JSON array)")
    source.add_argument("--run", metavar="DURATION", help="run the architecture locally this long (no chaos) "
                                                          "and export the observed graph")
    p.add_argument("--seed", type=int, default=1, help="seed of the --run (default %(default)s)")
    p.add_argument("-f", "--out", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(handler=cmd_export)
