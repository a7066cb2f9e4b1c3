"""`simiankube policy explain` and `simiankube verify`: segmentation on the command line.

Exit codes of `verify` (documented in docs/segmentation.md):
0 every cell as expected; 3 some cell differs or was not observed;
4 the network plugin does not enforce NetworkPolicy (every expected block
was open); 5 the cluster could not be asked (unreachable, no running pods).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from simiankube.cli import common
from simiankube.segmentation.scenario import explain_json, scenario
from simiankube.segmentation.reachability import LEGEND
from simiankube.render import RenderSettings
from simiankube.model.topology import expand
from simiankube.segmentation.verify import VerificationReport

EXIT_MISMATCH = 3
EXIT_NOT_ENFORCED = 4
EXIT_CLUSTER = 5


def cmd_policy_explain(args: argparse.Namespace) -> int:
    arch = common.load(args)
    case = scenario(expand(arch), RenderSettings(namespace=args.namespace))
    matrix = case.matrix(case.model(), by_pod=args.pods)
    if args.output == "json":
        sys.stdout.write(common.dump(explain_json(case, matrix), "json"))
        return 0
    level = "pod" if args.pods else "service"
    print(f"architecture {arch.resource_name}: {len(case.policies)} NetworkPolicies "
          f"(mode {arch.segmentation.mode}), expected reachability by {level} on port http; "
          f"rows = source, columns = destination")
    print(f"legend: {LEGEND}")
    sys.stdout.write(matrix.text())
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from simiankube.segmentation.kube import verify_with_kubeconfig  # the Kubernetes client only where needed

    name, arch = common.named_architecture(args.architecture)
    options: dict[str, Any] = {"by_pod": args.pods, "settle_seconds": args.settle, "timeout_ms": args.timeout_ms}
    try:
        report = asyncio.run(verify_with_kubeconfig(args.kubeconfig, args.namespace, name, arch, **options))
    except Exception as err:  # noqa: BLE001 - any failure to reach the cluster ends here
        print(f"error: cannot verify {name} in namespace {args.namespace}: {err}", file=sys.stderr)
        return EXIT_CLUSTER
    if not report.expected.rows:
        print(f"error: no running pods of architecture {name!r} in namespace {args.namespace!r}", file=sys.stderr)
        return EXIT_CLUSTER
    if report.judged_against == "present":
        print(f"note: Architecture {name!r} not readable in {args.namespace!r}: judged against the "
              "NetworkPolicies present (pass its file to judge against what it renders)", file=sys.stderr)
    sys.stdout.write(report.text() if args.output == "text" else common.dump(report.to_dict(), args.output))
    return exit_code(report)


def exit_code(report: VerificationReport) -> int:
    if report.enforced is False:
        return EXIT_NOT_ENFORCED
    return 0 if report.ok else EXIT_MISMATCH


def register(commands: Any) -> None:
    policy = commands.add_parser("policy", help="inspect the NetworkPolicies of an architecture (no cluster)",
                                 description="Inspect the NetworkPolicies an architecture renders, with no cluster.")
    sub = policy.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser(
        "explain",
        help="print the reachability the rendered policies should produce",
        description="Render FILE, evaluate its NetworkPolicies with the reachability model and print the "
                    "expected truth table (rows = source, columns = destination). Rows 'clients' and 'metrics' "
                    "are pods matching segmentation.clientsFrom and metricsFrom; the kube-dns columns are "
                    "cluster DNS.",
    )
    common.add_file_argument(p)
    common.add_scale_arguments(p)
    p.add_argument("-n", "--namespace", default="default", help="namespace of the objects (default %(default)s)")
    p.add_argument("--pods", action="store_true", help="one row and column per instance instead of per service")
    common.add_output_argument(p, ("text", "json"))
    p.set_defaults(handler=cmd_policy_explain)

    p = commands.add_parser(
        "verify",
        help="prove on a live cluster that the NetworkPolicies hold",
        description="Compute the expected reachability from the NetworkPolicies the architecture renders (from "
                    "FILE, else the Architecture resource; the namespace's other policies count too), report "
                    "rendered policies missing from the namespace, probe "
                    "every pod of the architecture from every other (each source pod's nanoservice, reached "
                    "through the API server's pod proxy) and compare. Exit codes: 0 as expected, "
                    f"{EXIT_MISMATCH} mismatch, {EXIT_NOT_ENFORCED} network plugin does not enforce "
                    f"NetworkPolicy, {EXIT_CLUSTER} cluster unreachable or no running pods.",
    )
    p.add_argument("architecture", metavar="ARCH", help="the Architecture's name, or the file that defines it")
    p.add_argument("-n", "--namespace", default="default", help="namespace of the architecture (default %(default)s)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG / ~/.kube/config)")
    p.add_argument("--pods", action="store_true", help="one row and column per pod instead of per service")
    p.add_argument("--settle", type=float, default=5.0, metavar="SECONDS",
                   help="wait until the newest policy is this old before probing (default %(default)s)")
    p.add_argument("--timeout-ms", type=int, default=1000, metavar="MS",
                   help="connect + HTTP timeout of each probe (default %(default)s)")
    common.add_output_argument(p, ("text", "json", "yaml"))
    p.set_defaults(handler=cmd_verify)
