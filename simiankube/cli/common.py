"""What every command shares: reading an architecture and writing machine-readable output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import yaml

from simiankube.model.spec import Architecture, load_file


def dump(data: Any, output: str) -> str:
    """Machine-readable output in the format the user asked for."""
    if output == "json":
        return json.dumps(data, indent=2, sort_keys=False) + "\n"
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    if isinstance(data, list):
        return yaml.dump_all(data, Dumper=dumper, sort_keys=False, default_flow_style=False)
    return yaml.dump(data, Dumper=dumper, sort_keys=False, default_flow_style=False)


def load(args: argparse.Namespace) -> Architecture:
    """The architecture named on the command line, with --scale/--regions applied."""
    arch = load_file(args.file)
    percent = getattr(args, "scale", None)
    regions = getattr(args, "regions", None)
    if percent is not None or regions is not None:
        arch = arch.with_scale(percent, regions)
    for warning in arch.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return arch


def add_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="an Architecture CR (YAML/JSON) or a spigo *_arch.json file")


def add_scale_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=int, metavar="PCT", help="scale every count by PCT percent (spigo -p)")
    parser.add_argument("--regions", type=int, metavar="N", help="multiply every service's regions by N (spigo -w)")


def add_output_argument(parser: argparse.ArgumentParser, choices: Sequence[str] = ("yaml", "json")) -> None:
    parser.add_argument("-o", "--output", choices=choices, default=choices[0], help="output format (default %(default)s)")


def named_architecture(value: str) -> tuple[str, Architecture | None]:
    """An Architecture on a cluster named by its resource name, or by the file that defines it (then its model too)."""
    if Path(value).is_file():
        arch = load_file(value)
        return arch.resource_name, arch
    return value, None
