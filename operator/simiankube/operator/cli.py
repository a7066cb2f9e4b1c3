"""`simiankube operator`: run the operator (the entry point of the operator image)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import socket
import sys
import uuid
from typing import Any

import kopf

from simiankube.operator.chaos import CHAOS_MODES
from simiankube.operator.controller import OperatorConfig, now
from simiankube.operator.kube import Kube
from simiankube.operator.leader import LeaseTerms, acquire
from simiankube.render import PodResources, RenderSettings, parse_resources

ENV_IMAGE = "SIMIANKUBE_NANOSERVICE_IMAGE"
ENV_RESOURCES = "SIMIANKUBE_NANOSERVICE_RESOURCES"


def register(commands: Any) -> None:
    p = commands.add_parser(
        "operator", help="run the operator against the current kubeconfig or in-cluster",
        description="Reconcile Architecture resources into workloads, keep their status, run chaos.")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                       help="watch this namespace (repeatable)")
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       help="watch every namespace (the default when no --namespace is given)")
    p.add_argument("--metrics-port", type=int, default=OperatorConfig.metrics_port, metavar="PORT",
                   help="serve Prometheus metrics on PORT at /metrics; 0 disables (default %(default)s)")
    p.add_argument("--liveness", default="", metavar="URL",
                   help="kopf health endpoint, e.g. http://0.0.0.0:8080/healthz (default: off)")
    p.add_argument("--nanoservice-image", default=os.environ.get(ENV_IMAGE, RenderSettings.image), metavar="IMAGE",
                   help=f"image of the rendered pods (env {ENV_IMAGE}; default %(default)s)")
    p.add_argument("--nanoservice-resources", type=pod_resources, metavar="JSON",
                   default=os.environ.get(ENV_RESOURCES, json.dumps(PodResources().as_kubernetes())),
                   help="requests and limits of every rendered pod's container, "
                        '{"requests": {"cpu": ..., "memory": ...}, "limits": {...}}; a key left out is not set '
                        f"(env {ENV_RESOURCES}; default %(default)s)")
    p.add_argument("--apply-concurrency", type=int, default=OperatorConfig.apply_concurrency, metavar="N",
                   help="parallel server-side applies (default %(default)s)")
    p.add_argument("--chaos", choices=CHAOS_MODES, default=OperatorConfig.chaos_mode,
                   help="operator-wide chaos switch: on, dry-run (never delete) or off (default %(default)s)")
    p.add_argument("--no-verification", dest="verification", action="store_false",
                   help="never run periodic segmentation verification (the chart then grants no pods/proxy)")
    p.add_argument("--crd-timeout", type=float, default=OperatorConfig.crd_timeout_seconds, metavar="SECONDS",
                   help="wait this long at startup for the Architecture CRD to be served, then exit 1 "
                        "(default %(default)s)")
    p.add_argument("--leader-election", metavar="NAMESPACE/NAME", type=lease_name,
                   help="run as one of several replicas: only the holder of this Lease reconciles and kills "
                        "(the others wait, answering --liveness); default: off, the only replica")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(handler=run)


def pod_resources(value: str) -> PodResources:
    try:
        return parse_resources(json.loads(value))
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err}): {value!r}") from None
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def lease_name(value: str) -> tuple[str, str]:
    namespace, _, name = value.partition("/")
    if not namespace or not name:
        raise argparse.ArgumentTypeError(f"expected NAMESPACE/NAME, got {value!r}")
    return namespace, name


async def lead(terms: LeaseTerms, liveness: str) -> None:
    kube = await Kube.connect("simiankube-leader", lambda verb, kind: None)
    try:
        await acquire(kube, terms, now, liveness)
    finally:
        await kube.close()


def run(args: argparse.Namespace) -> int:
    lease = None
    if args.leader_election:
        identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        namespace, name = args.leader_election
        lease = LeaseTerms(namespace, name, identity)
    config = OperatorConfig(
        namespaces=tuple(args.namespace),
        metrics_port=args.metrics_port,
        liveness=args.liveness,
        nanoservice_image=args.nanoservice_image,
        nanoservice_resources=args.nanoservice_resources,
        apply_concurrency=args.apply_concurrency,
        chaos_mode=args.chaos,
        crd_timeout_seconds=args.crd_timeout,
        verification=args.verification,
        lease=lease,
    )
    importlib.import_module("simiankube.operator.handlers")  # registers the handlers
    kopf.configure(verbose=args.verbose)
    if not args.verbose:  # kopf's health server logs every probe: a line every few seconds, forever
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # kopf names itself user@host with getpass.getuser(), which raises when the
    # uid has no passwd entry, as in the image (65532); getuser reads LOGNAME first.
    os.environ.setdefault("LOGNAME", "simiankube")
    if lease is not None:
        asyncio.run(lead(lease, config.liveness))  # before kopf: a standby neither watches nor writes
    try:
        kopf.run(
            standalone=True,  # one replica, no peering objects to grant RBAC for
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            liveness_endpoint=config.liveness or None,
            memo=kopf.Memo(config=config),
        )
    except Exception as err:  # kopf's (private) ActivityError: a startup handler failed for good
        print(f"simiankube operator: {err.__cause__ or err}", file=sys.stderr)
        return 1
    return 0
