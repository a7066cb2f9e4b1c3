"""`simiankube ui`: the live traffic view of an architecture running on a cluster."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from simiankube.cli.common import named_architecture
from simiankube.cli.run import listen_address
from simiankube.cli.segmentation import EXIT_CLUSTER

DEFAULT_LISTEN = "127.0.0.1:8088"


def cmd_ui(args: argparse.Namespace) -> int:
    from kubernetes_asyncio.client import ApiException  # the Kubernetes client only where needed
    from kubernetes_asyncio.config import ConfigException

    from simiankube.ui.kube import serve_cluster

    name, _ = named_architecture(args.architecture)
    try:
        asyncio.run(serve_cluster(args.kubeconfig, args.namespace, name, args.listen, sys.stderr))
    except ApiException as err:
        what = "no such Architecture" if err.status == 404 else f"{err.status} {err.reason}"
        print(f"error: cannot show {name} in namespace {args.namespace}: {what}", file=sys.stderr)
        return EXIT_CLUSTER
    except (ConfigException, OSError) as err:
        print(f"error: cannot show {name} in namespace {args.namespace}: {err}", file=sys.stderr)
        return EXIT_CLUSTER
    return 0


def register(commands: Any) -> None:
    p = commands.add_parser(
        "ui", help="serve the live traffic view of an architecture on a cluster",
        description="Serve, in a browser, the live view of an Architecture on a cluster: its graph, per-edge and "
                    "per-service rates, errors and latency from the nanoservices' /metrics (read through the API "
                    "server's pod proxy with your credentials), ready instances, pods killed by chaos and the "
                    f"last segmentation verification. Runs until Ctrl-C. Exit code {EXIT_CLUSTER}: the cluster "
                    "could not be asked or the Architecture does not exist.",
    )
    p.add_argument("architecture", metavar="ARCH", help="the Architecture's name, or the file that defines it")
    p.add_argument("-n", "--namespace", default="default", help="namespace of the architecture (default %(default)s)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG / ~/.kube/config)")
    p.add_argument("--listen", type=listen_address, default=listen_address(DEFAULT_LISTEN), metavar="[HOST:]PORT",
                   help=f"where to serve the view (default {DEFAULT_LISTEN}; HOST defaults to 127.0.0.1)")
    p.set_defaults(handler=cmd_ui)
