"""Bringing a real node up next to the control plane, and taking it down without a trace.

Order: claim the machine (one real node at a time), snapshot the host,
create the bridge (the API server binds to its address), then after the
control plane: containerd, the images, kubelet, kube-proxy, kube-router and
CoreDNS. Teardown reverses it and restores the host from the snapshot, which
is also kept in the work directory so ``down`` can restore after a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from simiankube.testing.controlplane import coredns, host, node
from simiankube.testing.controlplane.binaries import (
    NODE_BINARIES,
    bin_dir,
    missing_binaries,
    rig_dir,
    versions,
)
from simiankube.testing.controlplane.errors import BinaryMissingError, RigError
from simiankube.testing.controlplane.pki import client_cert_kubeconfig, make_cert
from simiankube.testing.controlplane.processes import free_port

if TYPE_CHECKING:
    from simiankube.testing.controlplane.rig import ControlPlane

#: The node's part of the rig's work directory.
NODE_DIR: Final = "node"
SNAPSHOT_FILE: Final = "host-snapshot.json"
#: The node's processes, stopped before containers are removed and containerd last.
AGENTS: Final = ("kube-router", "kube-proxy", "kubelet")


def save_snapshot(snap: host.Snapshot, path: Path) -> None:
    data = {k: sorted(v) if isinstance(v, frozenset) else v for k, v in asdict(snap).items()}
    data["iptables"] = {k: sorted(v) for k, v in snap.iptables.items()}
    path.write_text(json.dumps(data, indent=1) + "\n")


def load_snapshot(path: Path) -> host.Snapshot:
    data: dict[str, Any] = json.loads(path.read_text())
    return host.Snapshot(
        iptables={k: frozenset(v) for k, v in data["iptables"].items()},
        sysctls=dict(data["sysctls"]),
        **{k: frozenset(v) for k, v in data.items() if k not in ("iptables", "sysctls")},
    )


def import_images(layout: node.NodeLayout, progress: Callable[[str], None]) -> list[str]:
    """Build (or take from cache) the images with rig/images.sh and import them into containerd.

    Returns the image references imported.
    """
    script = rig_dir() / "images.sh"
    began = time.monotonic()
    result = subprocess.run(["bash", str(script), "build"], capture_output=True, text=True)
    if result.returncode != 0:
        raise RigError(
            f"{script} build failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
        )
    progress(f"images ready ({time.monotonic() - began:.1f}s)")
    refs = []
    for line in result.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        name, ref, archive = parts
        imported = subprocess.run(
            node.ctr_argv(layout, "images", "import", archive), capture_output=True, text=True
        )
        if imported.returncode != 0:
            raise RigError(f"importing image {name} ({archive}) failed: {imported.stderr.strip()}")
        refs.append(ref)
    listed = subprocess.run(
        node.ctr_argv(layout, "images", "ls", "-q"), capture_output=True, text=True
    ).stdout.split()
    absent = [ref for ref in refs if ref not in listed]
    if absent or not refs:
        raise RigError(f"images not in containerd after import: {absent or 'none imported'}")
    progress(f"imported {len(refs)} images into containerd ({time.monotonic() - began:.1f}s)")
    return refs


def kill_shims(layout: node.NodeLayout) -> None:
    """SIGKILL the runc shims of this node's containerd (they leave containerd's process group)."""
    needle = str(layout.containerd_socket).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            if b"containerd-shim" in cmdline.split(b"\0")[0] and needle in cmdline:
                os.kill(int(entry.name), signal.SIGKILL)


def restore_host(workdir: Path) -> None:
    """Remove what a real node in ``workdir`` left on the host (from its saved snapshot)."""
    layout = node.NodeLayout(workdir / NODE_DIR)
    path = layout.root / SNAPSHOT_FILE
    if not path.exists():
        return
    before = load_snapshot(path)
    kill_shims(layout)
    host.kill_cgroup_processes(before)
    for argv in node.cleanup_argvs(layout, policy_engine=True):
        with contextlib.suppress(OSError, BinaryMissingError, subprocess.TimeoutExpired):
            subprocess.run(argv, capture_output=True, timeout=60)
    host.restore(before, bridge=node.BRIDGE, directories=[workdir])


class RealNode:
    """The real node of one :class:`ControlPlane` (see the module docstring)."""

    def __init__(self, workdir: Path, *, policy_engine: bool, progress: Callable[[str], None]):
        self.layout = node.NodeLayout(workdir / NODE_DIR)
        self.workdir = workdir
        self.policy_engine = policy_engine
        self._progress = progress
        self._lock: socket.socket | None = None
        self.before: host.Snapshot | None = None
        self.images: list[str] = []
        self.kubelet_port = free_port()
        self._ports = [free_port() for _ in range(3)]

    def check(self) -> None:
        """Fail early and clearly: binaries, host tools, root."""
        missing = missing_binaries(NODE_BINARIES)
        if missing:
            raise BinaryMissingError(
                f"real-node binaries missing from {bin_dir()}: {', '.join(missing)}; build them "
                "with `python -m simiankube.testing.controlplane build` (or rig/build.sh)"
            )
        tools = host.missing_tools(node.HOST_TOOLS)
        if tools:
            raise RigError(
                f"host tools missing for the real node: {', '.join(tools)} "
                "(Debian: scripts/bootstrap.sh system)"
            )
        if os.geteuid() != 0:
            raise RigError("a real node needs root (containers, iptables, mounts)")

    def prepare(self) -> None:
        """Claim the machine, snapshot it, size the neighbour table, create the bridge the API server binds to."""
        self._lock = host.hold_lock()
        self.layout.root.mkdir(parents=True, exist_ok=True)
        self.before = host.snapshot()
        save_snapshot(self.before, self.layout.root / SNAPSHOT_FILE)
        host.raise_sysctls(node.NEIGHBOUR_THRESHOLDS)
        host.set_up_bridge(node.BRIDGE, f"{node.NODE_IP}/24")

    def make_credentials(self, pki: Path, server: str) -> None:
        """Client certificates (kubelet, kube-proxy, kube-router, the API server's to kubelets)."""
        make_cert(
            pki, "kubelet", common_name=f"system:node:{node.NODE_NAME}", organization="system:nodes"
        )
        make_cert(
            pki, "kubelet-serving", common_name=f"system:node:{node.NODE_NAME}",
            server_names=[node.NODE_IP, node.NODE_NAME],
        )  # fmt: skip
        make_cert(pki, "kube-proxy", common_name="system:kube-proxy")
        make_cert(pki, "kube-router", common_name="simiankube:kube-router")
        make_cert(
            pki, "apiserver-kubelet-client", common_name="kube-apiserver-kubelet-client",
            organization="system:masters",
        )  # fmt: skip
        config = self.layout.config
        config.mkdir(parents=True, exist_ok=True)
        for name in ("kubelet", "kube-proxy", "kube-router"):
            client_cert_kubeconfig(config / f"{name}.kubeconfig", server=server, pki=pki, name=name)
        node.write_configs(
            self.layout,
            pki=pki,
            kubelet_port=self.kubelet_port,
            kubelet_healthz_port=self._ports[0],
            proxy_healthz_port=self._ports[1],
            proxy_metrics_port=self._ports[2],
        )

    def start(self, cp: ControlPlane, wait: Callable[[Callable[[], object], str], None]) -> None:
        """Start the node's parts on a ready control plane; return when CoreDNS is Ready."""
        env = node.node_env()
        cp.launch("containerd", node.containerd_argv(self.layout), env=env)
        wait(self._containerd_ready, "containerd serving")
        self.images = import_images(self.layout, self._progress)
        if self.policy_engine:
            for obj in node.kube_router_rbac():
                cp.apply(obj)
        cp.launch("kubelet", node.kubelet_argv(self.layout), env=env)
        cp.launch("kube-proxy", node.kube_proxy_argv(self.layout), env=env)
        wait(lambda: self._node_ready(cp), f"node {node.NODE_NAME} Ready")
        if self.policy_engine:  # it needs its Node to exist when it starts
            cp.launch("kube-router", node.kube_router_argv(self.layout), env=env)
        for obj in coredns.manifests(versions()["COREDNS_VERSION"]):
            cp.apply(obj)
        wait(lambda: self._coredns_ready(cp), "CoreDNS Ready")

    def stop(self, terminate: Callable[[Sequence[str]], None]) -> None:
        """Stop the node and restore the host: agents, containers, containerd, host state."""
        terminate(AGENTS)
        with contextlib.suppress(OSError, subprocess.TimeoutExpired, BinaryMissingError):
            subprocess.run(
                node.crictl_argv(self.layout, "rmp", "--all", "--force"),
                capture_output=True,
                timeout=60,
            )
        terminate(["containerd"])
        restore_host(self.workdir)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- readiness ------------------------------------------------------------------

    def _containerd_ready(self) -> bool:
        result = subprocess.run(
            node.ctr_argv(self.layout, "version"), capture_output=True, timeout=10
        )
        return result.returncode == 0

    @staticmethod
    def _node_ready(cp: ControlPlane) -> bool:
        status, body = cp.api("GET", f"/api/v1/nodes/{node.NODE_NAME}")
        conditions = body.get("status", {}).get("conditions", []) if status == 200 else []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    @staticmethod
    def _coredns_ready(cp: ControlPlane) -> bool:
        status, body = cp.api(
            "GET", f"/apis/apps/v1/namespaces/{coredns.NAMESPACE}/deployments/{coredns.NAME}"
        )
        return status == 200 and body.get("status", {}).get("readyReplicas", 0) >= 1
