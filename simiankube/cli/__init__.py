"""The `simiankube` command line: thin wrappers over spec → topology → render.

Every command that reads an architecture takes the CR (YAML or JSON) or a
spigo `*_arch.json` file; problems go to stderr, each naming its field, and
the exit code is 1 for bad input, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path


from simiankube.model import generate as generator
from simiankube.cli.common import add_file_argument, add_output_argument, add_scale_arguments, dump, load
from simiankube.render import RenderSettings, render
from simiankube.model.compose import ComposeError, arch_name, compose_to_spigo, is_compose
from simiankube.model.spec import SpecError, parse_document, read_document, to_resource
from simiankube.model.topology import expand

EXIT_INVALID = 1

# Commands that other parts add: each module has `register(subparsers)`. Listed with the
# commands they add, so a command whose extra is not installed still shows in --help and says
# what to install instead of breaking the whole CLI.
EXTENSIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("simiankube.cli.segmentation", ("policy", "verify")),
    ("simiankube.cli.run", ("run",)),
    ("simiankube.cli.export", ("export",)),
    ("simiankube.cli.ui", ("ui",)),
    ("simiankube.operator.cli", ("operator",)),
)
# Which extra brings each third-party package a command may need.
EXTRA_OF = {
    "aiohttp": "nanoservice", "prometheus_client": "nanoservice", "uvloop": "nanoservice",
    "kopf": "operator", "kubernetes_asyncio": "operator",
}
EXIT_MISSING_EXTRA = 3

Handler = Callable[[argparse.Namespace], int]


# -- commands -----------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    arch = load(args)
    topology = expand(arch)
    render(topology, RenderSettings())  # rendered names must be unique: SpecError otherwise
    summary = {
        "architecture": arch.resource_name,
        "valid": True,
        "services": len(arch.services),
        "workloads": len(topology.placements),
        "instances": len(topology.instances),
        "regions": list(topology.regions),
        "warnings": list(arch.warnings),
    }
    if args.output == "text":
        print(
            f"{args.file}: valid: {summary['services']} services, {summary['instances']} instances "
            f"in {summary['workloads']} workloads ({', '.join(topology.regions)})"
        )
    else:
        sys.stdout.write(dump(summary, args.output))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    arch = load(args)
    settings = RenderSettings(namespace=args.namespace, image=args.image)
    sys.stdout.write(dump(render(expand(arch), settings), args.output))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError([f"cannot read file: {err.strerror}"], args.file) from err
    document = read_document(text, args.file)
    try:
        if is_compose(document):
            document = compose_to_spigo(document, arch_name(args.file))
        arch = parse_document(document)
    except ComposeError as err:
        raise SpecError(err.problems, args.file) from None
    except SpecError as err:
        raise SpecError(err.problems, args.file) from None
    for warning in arch.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sys.stdout.write(dump(to_resource(arch), args.output))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    try:
        document = generator.generate(args.services, seed=args.seed, name=args.name)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = dump(document, args.output)
    if args.file:
        with open(args.file, "w", encoding="utf-8") as out:
            out.write(text)
        print(f"wrote {args.file}: {args.services} services", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simiankube",
        description="Simulated microservice architectures (spigo's format) on Kubernetes or on this machine.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {metadata.version('simiankube')}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("validate", help="check an architecture, report every problem",
                            description="Check an architecture and report every problem at once.")
    add_file_argument(p)
    add_scale_arguments(p)
    add_output_argument(p, ("text", "yaml", "json"))
    p.set_defaults(handler=cmd_validate)

    p = commands.add_parser("render", help="print the Kubernetes objects of an architecture",
                            description="Print the exact Kubernetes objects the operator would apply.")
    add_file_argument(p)
    add_scale_arguments(p)
    p.add_argument("-n", "--namespace", default="default", help="namespace of the objects (default %(default)s)")
    p.add_argument("--image", default=RenderSettings.image, help="nanoservice image (default %(default)s)")
    add_output_argument(p)
    p.set_defaults(handler=cmd_render)

    p = commands.add_parser("import", help="convert a spigo *_arch.json or a docker-compose file into an Architecture CR",
                            description="Print the Architecture custom resource equivalent to a spigo file or a "
                                        "docker-compose file (v1, v2, v3), converted as spigo's compose2arch does: "
                                        "services become monoliths (db: staash, redis and database images: "
                                        "stores), links/depends_on dependencies, networks elbs, named volumes "
                                        "stores, published ports www- traffic sources.")
    add_file_argument(p)
    add_output_argument(p)
    p.set_defaults(handler=cmd_import)

    p = commands.add_parser("generate", help="write a random architecture for scale tests",
                            description="Write a random, realistic architecture (power-law dependency graph, "
                                        "stores at the leaves, one traffic source).")
    p.add_argument("--services", type=int, required=True, metavar="N", help="number of services (>= 4)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default %(default)s)")
    p.add_argument("--name", default="", help="architecture name (default generated-N)")
    p.add_argument("--file", "-f", metavar="FILE", help="write to FILE instead of stdout")
    add_output_argument(p)
    p.set_defaults(handler=cmd_generate)

    for module, names in EXTENSIONS:
        try:
            importlib.import_module(module).register(commands)
        except ModuleNotFoundError as err:
            for name in names:
                hint = missing_extra(err)
                placeholder = commands.add_parser(name, help=f"(not installed: {hint})", description=hint)
                placeholder.add_argument("ignored", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
                placeholder.set_defaults(handler=lambda _args, hint=hint: fail_missing(hint))
    return parser


def missing_extra(err: ModuleNotFoundError) -> str:
    """What to install for a command whose third-party package is missing."""
    package = (err.name or "").split(".")[0]
    if package not in EXTRA_OF:
        raise err
    extra = EXTRA_OF[package]
    return f"this command needs {package}: pip install 'simiankube[{extra}]' (or 'simiankube[all]')"


def fail_missing(hint: str) -> int:
    print(f"error: {hint}", file=sys.stderr)
    return EXIT_MISSING_EXTRA


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    except ModuleNotFoundError as err:  # a command that imports its extra's packages lazily
        return fail_missing(missing_extra(err))
    except KeyboardInterrupt:
        return 130

