"""Locating the rig, its pinned versions and the cached binaries rig/build.sh makes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from simiankube.testing.controlplane.errors import BinaryMissingError, RigError

#: Root of the source checkout (this file is simiankube/testing/controlplane/binaries.py).
REPO_ROOT: Final = Path(__file__).resolve().parents[3]

#: The control plane's binaries (and helm); what the ``control_plane`` fixture needs.
BINARIES: Final = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)

#: Binaries the control plane itself runs (helm is only for tests that use it).
CONTROL_PLANE_BINARIES: Final = BINARIES[:-1]

#: What a real node runs on top of the control plane (``up --real-node``).
NODE_BINARIES: Final = (
    "kubelet",
    "kube-proxy",
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "crictl",
    "kube-router",
    "coredns",
    "cni/bridge",
    "cni/host-local",
    "cni/loopback",
    "cni/portmap",
)


def rig_dir() -> Path:
    """Directory holding ``build.sh`` and ``versions.env`` ($SIMIANKUBE_RIG overrides)."""
    return Path(os.environ.get("SIMIANKUBE_RIG", REPO_ROOT / "rig"))


def versions() -> dict[str, str]:
    """The pinned versions from ``rig/versions.env`` (``KEY=VALUE`` lines)."""
    path = rig_dir() / "versions.env"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RigError(f"{path} not found: set SIMIANKUBE_RIG to the rig/ directory") from None
    pins: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            pins[key.strip()] = value.strip().strip('"')
    return pins


def cache_root() -> Path:
    """Cache root: $SIMIANKUBE_CACHE, default ``~/.cache/simiankube``."""
    env = os.environ.get("SIMIANKUBE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "simiankube"


def bin_dir() -> Path:
    """Directory of the cached binaries for the pinned Kubernetes version."""
    return cache_root() / "bin" / versions()["K8S_VERSION"]


#: Where each binary comes from: (Go package, versions.env key). rig/build.sh
#: writes ``<name>.version`` = ``<package>@<version>`` next to each binary.
_SOURCES: Final = {
    "etcd": ("go.etcd.io/etcd/server/v3", "ETCD_VERSION"),
    "kube-apiserver": ("k8s.io/kubernetes/cmd/kube-apiserver", "K8S_VERSION"),
    "kube-controller-manager": ("k8s.io/kubernetes/cmd/kube-controller-manager", "K8S_VERSION"),
    "kube-scheduler": ("k8s.io/kubernetes/cmd/kube-scheduler", "K8S_VERSION"),
    "kubectl": ("k8s.io/kubernetes/cmd/kubectl", "K8S_VERSION"),
    "kwok": ("sigs.k8s.io/kwok/cmd/kwok", "KWOK_VERSION"),
    "helm": ("helm.sh/helm/v4/cmd/helm", "HELM_VERSION"),
    # not a binary: kwok's lifecycle stages, copied from the kwok module
    "kwok-stages.yaml": ("sigs.k8s.io/kwok", "KWOK_VERSION"),
    "kubelet": ("k8s.io/kubernetes/cmd/kubelet", "K8S_VERSION"),
    "kube-proxy": ("k8s.io/kubernetes/cmd/kube-proxy", "K8S_VERSION"),
    "containerd": ("github.com/containerd/containerd/v2/cmd/containerd", "CONTAINERD_VERSION"),
    "containerd-shim-runc-v2": (
        "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
        "CONTAINERD_VERSION",
    ),
    "ctr": ("github.com/containerd/containerd/v2/cmd/ctr", "CONTAINERD_VERSION"),
    "crictl": ("sigs.k8s.io/cri-tools/cmd/crictl", "CRICTL_VERSION"),
    "kube-router": (
        "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router",
        "KUBE_ROUTER_VERSION",
    ),
    "coredns": ("github.com/coredns/coredns", "COREDNS_VERSION"),
    **{
        f"cni/{plugin}": (
            f"github.com/containernetworking/plugins/plugins/{kind}/{plugin}",
            "CNI_PLUGINS_VERSION",
        )
        for kind, plugin in (
            ("main", "bridge"),
            ("ipam", "host-local"),
            ("main", "loopback"),
            ("meta", "portmap"),
        )
    },
}


def _is_current(directory: Path, name: str, pins: dict[str, str]) -> bool:
    package, key = _SOURCES[name]
    path = directory / name
    if not path.is_file() or (name in BINARIES and not os.access(path, os.X_OK)):
        return False
    try:
        stamp = (directory / f"{name}.version").read_text().strip()
    except FileNotFoundError:
        return False
    return stamp == f"{package}@{pins[key]}"


def missing_binaries(names: Sequence[str] = BINARIES) -> list[str]:
    """Names of rig artifacts not built yet, or built from other versions than pinned."""
    pins = versions()
    directory = bin_dir()
    wanted = list(names) + (["kwok-stages.yaml"] if "kwok" in names else [])
    return [n for n in wanted if not _is_current(directory, n, pins)]


def binary(name: str) -> Path:
    """Path of a cached rig binary, e.g. ``binary("kubectl")``.

    Raises:
        BinaryMissingError: it was not built (or not from the pinned version);
            the message says how to build.
    """
    if name not in _SOURCES:
        raise ValueError(f"unknown rig binary {name!r}; known: {', '.join(_SOURCES)}")
    if missing_binaries([name]):
        raise BinaryMissingError(
            f"{bin_dir() / name} is missing or not built from the pinned version: build the "
            "rig with `python -m simiankube.testing.controlplane build` (or rig/build.sh)"
        )
    return bin_dir() / name


def build(*, stdout: Any = None) -> None:
    """Run ``rig/build.sh`` (builds only what is missing).

    Args:
        stdout: where the build's output goes (default: inherited).

    Raises:
        RigError: the build failed.
    """
    script = rig_dir() / "build.sh"
    result = subprocess.run(["bash", str(script)], stdout=stdout, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RigError(f"{script} failed with exit code {result.returncode}")
