"""`simiankube run`: an architecture as local processes, no cluster needed."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from simiankube.cli.common import add_file_argument, add_output_argument, add_scale_arguments, load
from simiankube.localrun.histograms import collect, guesstimate, histograms_document
from simiankube.localrun.report import format_text
from simiankube.render.graph import read_spans
from simiankube.localrun.runner import RunError, run_architecture


def parse_duration(text: str) -> float:
    """`10`, `10s`, `2m`, `500ms` → seconds."""
    units = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
    for suffix, factor in units:
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * factor
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 30, 30s, 2m)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive, got {text!r}")
    return value


def listen_address(text: str) -> tuple[str, int]:
    """`[HOST:]PORT` for argparse (the same rule for `run --ui` and `ui --listen`)."""
    host, _, port = text.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"not a listen address: {text!r} (expected [HOST:]PORT, e.g. 8088)")
    return host.strip("[]") or "127.0.0.1", int(port)


def cmd_run(args: argparse.Namespace) -> int:
    arch = load(args)
    zipkin_file = args.zipkin_file
    if zipkin_file == "" and (args.histograms or args.guesstimate):
        print("error: --histograms and --guesstimate are built from the run's spans: drop --zipkin-file ''",
              file=sys.stderr)
        return 2
    if zipkin_file is None:
        zipkin_file = str(Path(tempfile.gettempdir()) / f"simiankube-{arch.resource_name}-{os.getpid()}.zipkin.jsonl")
    options: dict[str, Any] = dict(
        duration=args.duration, seed=args.seed, chaos=args.chaos, zipkin_file=zipkin_file, workers=args.workers,
        progress=sys.stderr,
    )
    try:
        if args.ui is None:
            report = asyncio.run(run_architecture(arch, **options))
        else:
            from simiankube.ui.local import run_with_view  # aiohttp's web server only where needed

            report = asyncio.run(run_with_view(arch, args.ui, **options))
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # only the view's listening socket raises it this far
        host, port = args.ui
        print(f"error: --ui: cannot serve the live view on {host}:{port}: {err.strerror or err}", file=sys.stderr)
        return 1
    sys.stdout.write(report.to_json() if args.output == "json" else format_text(report))
    if args.histograms or args.guesstimate:
        write_histograms(arch.name, zipkin_file, args.histograms, args.guesstimate)
    return 0


def write_histograms(architecture: str, zipkin_file: str, histograms_path: str | None,
                     guesstimate_path: str | None) -> None:
    """Per-service latency histograms (JSON) and the Guesstimate model, from the run's spans."""
    text = Path(zipkin_file).read_text(encoding="utf-8") if Path(zipkin_file).exists() else ""
    found = collect(read_spans(text.splitlines(keepends=True)))
    for path, document in ((histograms_path, histograms_document(architecture, found)),
                           (guesstimate_path, guesstimate(architecture, found))):
        if path:
            Path(path).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
            print(f"wrote {path}: {len(found)} services", file=sys.stderr)


def register(commands: Any) -> None:
    p = commands.add_parser(
        "run", help="run an architecture on this machine, no cluster needed",
        description="Run every instance as a real nanoservice on its own loopback address, send traffic, "
                    "kill the victim at half time (chaos), and report per-service figures.",
    )
    add_file_argument(p)
    add_scale_arguments(p)
    p.add_argument("--duration", type=parse_duration, default=10.0, metavar="D",
                   help="how long traffic runs: 30, 30s, 2m (default 10s)")
    p.add_argument("--seed", type=int, default=1, help="seed of latency draws, routing and the victim (default 1)")
    p.add_argument("--chaos", action=argparse.BooleanOptionalAction, default=True,
                   help="kill one instance of the victim at half time and restart it (default on)")
    p.add_argument("--zipkin-file", metavar="PATH", default=None,
                   help="where spans go (Zipkin v2 JSON lines; default a file in the temp dir; '' for none)")
    p.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)), metavar="N",
                   help="processes sharing the instances, besides the traffic source's and the victim's "
                        "(default: one per core, at most 2)")
    p.add_argument("--histograms", metavar="FILE",
                   help="write per-service latency histograms (ms, from the run's SERVER spans) as JSON, as "
                        "spigo's -c collects them")
    p.add_argument("--guesstimate", metavar="FILE",
                   help="write spigo's Guesstimate model: up to 1000 latency samples (ms) per service")
    p.add_argument("--ui", type=listen_address, metavar="[HOST:]PORT", default=None,
                   help="serve the live traffic view in a browser during the run (HOST default 127.0.0.1; "
                        "port 0 picks a free one); prints its URL")
    add_output_argument(p, ("table", "json"))
    p.set_defaults(handler=cmd_run)
