"""The command line: ``python -m simiankube.testing.controlplane build|up|down|run``."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from simiankube.testing.controlplane.binaries import (
    CONTROL_PLANE_BINARIES,
    REPO_ROOT,
    bin_dir,
    build,
    missing_binaries,
)
from simiankube.testing.controlplane.errors import RigError
from simiankube.testing.controlplane.rig import ControlPlane, read_state, stop_rig

_READY_LINE: Final = "SIMIANKUBE-RIG-READY"


def _print(line: str) -> None:
    print(line, flush=True)


def _wait_for_signal() -> int:
    """Block until SIGINT or SIGTERM; return the signal number."""
    received: list[int] = []
    event = threading.Event()

    def handler(signum: int, frame: types.FrameType | None) -> None:
        received.append(signum)
        event.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not event.wait(1.0):
        pass
    return received[0]


def _node_flags(args: argparse.Namespace) -> list[str]:
    """The real-node options of ``args`` as command-line flags (``up`` passes them on)."""
    flags = ["--real-node"] if args.real_node else []
    flags += ["--no-policy-engine"] if not args.policy_engine else []
    return flags + (["--kwok-nodes"] if args.kwok_nodes else [])


def _serve(workdir: Path, args: argparse.Namespace, *, detached: bool) -> int:
    """Run a rig in this process until SIGINT/SIGTERM (used by ``run`` and ``up``)."""
    # SIGINT/SIGTERM during start-up abort it (KeyboardInterrupt) and tear down.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    rig = ControlPlane(
        workdir,
        progress=lambda line: _print(f"[rig] {line}"),
        handle_signals=False,
        real_node=args.real_node,
        policy_engine=args.policy_engine,
        kwok_nodes=True if args.kwok_nodes else None,
    )
    try:
        rig.start()
    except KeyboardInterrupt:
        _print("[rig] interrupted during start-up; stopped")
        return 130
    except RigError as error:
        _print(f"[rig] ERROR: {error}")
        return 1
    try:
        _print(f"export KUBECONFIG={rig.kubeconfig}")
        if detached:
            _print(_READY_LINE)
            # Nobody reads our output any more: don't die of a closed pipe.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
        else:
            _print("[rig] running; Ctrl-C (SIGINT) or SIGTERM stops it")
        signum = _wait_for_signal()
        # Ignore further signals while tearing down.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _print(f"[rig] signal {signum}: stopping")
    except KeyboardInterrupt:
        pass
    finally:
        rig.stop()
    _print("[rig] stopped")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    try:
        build()
    except RigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _check_binaries() -> str | None:
    try:
        missing = missing_binaries(CONTROL_PLANE_BINARIES)
    except RigError as error:
        return str(error)
    if missing:
        return (
            f"rig binaries missing from {bin_dir()}: {', '.join(missing)}\n"
            "build them first: python -m simiankube.testing.controlplane build"
        )
    return None


def _cmd_run(args: argparse.Namespace) -> int:
    problem = _check_binaries()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    return _serve(Path(args.dir), args, detached=False)


def _cmd_up(args: argparse.Namespace) -> int:
    problem = _check_binaries()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    workdir = Path(args.dir).resolve()
    if read_state(workdir) is not None:
        print(
            f"error: a rig is already recorded in {workdir}; "
            f"run `python -m simiankube.testing.controlplane down {workdir}` first",
            file=sys.stderr,
        )
        return 1
    # The detached process imports this module the way we did: append (never
    # prepend, so nothing in the checkout can shadow the standard library) the
    # directory holding the simiankube package.
    package_root = str(REPO_ROOT)
    bootstrap = (
        f"import sys; sys.path.append({package_root!r}); "
        "from simiankube.testing.controlplane import main; sys.exit(main())"
    )
    supervisor = subprocess.Popen(
        [sys.executable, "-c", bootstrap, "_serve", str(workdir), *_node_flags(args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # detached: survives this command and its terminal
        text=True,
    )
    assert supervisor.stdout is not None
    ready = False
    export = ""
    try:
        for line in supervisor.stdout:
            line = line.rstrip("\n")
            if line == _READY_LINE:
                ready = True
                break
            if line.startswith("export KUBECONFIG="):
                export = line
            else:
                print(line, file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        supervisor.terminate()
        supervisor.wait()
        return 130
    if not ready:
        supervisor.wait()
        print(f"error: the rig did not start (exit code {supervisor.returncode})", file=sys.stderr)
        return 1
    print(export)
    print(
        f"# rig running (pid {supervisor.pid}); stop it with: "
        f"python -m simiankube.testing.controlplane down {workdir}",
        file=sys.stderr,
    )
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    workdir = Path(args.dir)
    if not stop_rig(workdir, timeout=args.timeout):
        print(f"no rig recorded in {workdir} (nothing to stop)", file=sys.stderr)
        return 0
    print(f"rig in {workdir} stopped and removed", file=sys.stderr)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    return _serve(Path(args.dir), args, detached=True)


def _add_node_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="also run a real node (root; one per machine): containerd + runc, bridge CNI, "
        "kubelet, kube-proxy, CoreDNS and kube-router as NetworkPolicy engine, with the "
        "project's images (rig/images.sh) imported; the API server then listens on the "
        "node's bridge address",
    )
    parser.add_argument(
        "--no-policy-engine",
        dest="policy_engine",
        action="store_false",
        help="with --real-node: no kube-router, so NetworkPolicies are not enforced",
    )
    parser.add_argument(
        "--kwok-nodes",
        action="store_true",
        help="with --real-node: also run kwok's fake nodes (tainted kwok.x-k8s.io/node)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simiankube.testing.controlplane",
        description="A real Kubernetes control plane on loopback for tests "
        "(etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok nodes).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build_parser = commands.add_parser(
        "build",
        help="build the rig binaries (rig/build.sh)",
        description="Build the binaries from upstream Go modules into "
        "$SIMIANKUBE_CACHE (default ~/.cache/simiankube)/bin/<k8s-version>; "
        "only missing ones are built. Needs Go and the Go module proxy.",
    )
    build_parser.set_defaults(func=_cmd_build)

    up = commands.add_parser(
        "up",
        help="start a rig in the background, return when ready",
        description="Start a control plane in DIR, detached; returns once it is ready "
        "and prints `export KUBECONFIG=DIR/kubeconfig`. Stop it with `down DIR`.",
    )
    up.add_argument("dir", metavar="DIR", help="work directory (created; removed by down)")
    _add_node_options(up)
    up.set_defaults(func=_cmd_up)

    down = commands.add_parser(
        "down",
        help="stop the rig in DIR and remove its files",
        description="Stop the control plane recorded in DIR/state.json (from any process) "
        "and remove everything it wrote into DIR.",
    )
    down.add_argument("dir", metavar="DIR", help="work directory given to up")
    down.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for a clean stop (a real node takes longest)",
    )
    down.set_defaults(func=_cmd_down)

    run_parser = commands.add_parser(
        "run",
        help="run a rig in the foreground until Ctrl-C / SIGTERM",
        description="Start a control plane in DIR and keep it in the foreground; "
        "SIGINT or SIGTERM stops it and removes its files.",
    )
    run_parser.add_argument("dir", metavar="DIR", help="work directory (created; removed on exit)")
    _add_node_options(run_parser)
    run_parser.set_defaults(func=_cmd_run)

    serve = commands.add_parser("_serve")  # internal: the detached process behind `up`
    serve.add_argument("dir")
    _add_node_options(serve)
    serve.set_defaults(func=_cmd_serve)
    # keep the internal command out of the usage and help listings
    commands._choices_actions = [  # noqa: SLF001
        a
        for a in commands._choices_actions
        if a.dest != "_serve"  # noqa: SLF001
    ]

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
