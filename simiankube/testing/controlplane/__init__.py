"""A real Kubernetes control plane for tests, started by the tests themselves.

Like controller-runtime's envtest, plus the controllers that make workloads
produce pods and simulated nodes (kwok) that make those pods Running:

    etcd -> kube-apiserver (TLS, RBAC, ServiceAccount tokens, PodSecurity)
         -> kube-controller-manager, kube-scheduler, kwok (3 fake nodes)

Everything listens on 127.0.0.1 on free ports; every file lives under one
work directory. The binaries are built from upstream Go modules by
``rig/build.sh`` (versions pinned in ``rig/versions.env``) and cached under
``${SIMIANKUBE_CACHE:-~/.cache/simiankube}/bin/<k8s-version>/``.

Library use::

    with ControlPlane(tmp_path / "rig") as cp:
        cp.kubectl("get", "nodes")

Command line (for people)::

    python -m simiankube.testing.controlplane build
    python -m simiankube.testing.controlplane up DIR     # detached, returns when ready
    python -m simiankube.testing.controlplane down DIR
    python -m simiankube.testing.controlplane run DIR    # foreground, Ctrl-C stops

Pod IPs, node IPs and Service IPs are fake; nodes report 127.0.0.1, so the
only traffic this rig ever sends stays on loopback.

Modules: :mod:`.binaries` (pins and cached binaries), :mod:`.pki`
(certificates, kubeconfigs), :mod:`.processes` (child processes), one module
per component (:mod:`.etcd`, :mod:`.apiserver`, :mod:`.controllers`,
:mod:`.kwok`), :mod:`.rig` (the supervisor) and :mod:`.cli`.
"""

from simiankube.testing.controlplane.apiserver import (
    SERVICE_ACCOUNT_ISSUER,
    SERVICE_CLUSTER_IP_RANGE,
)
from simiankube.testing.controlplane.binaries import (
    BINARIES,
    CONTROL_PLANE_BINARIES,
    NODE_BINARIES,
    REPO_ROOT,
    bin_dir,
    binary,
    build,
    cache_root,
    missing_binaries,
    rig_dir,
    versions,
)
from simiankube.testing.controlplane.cli import main
from simiankube.testing.controlplane.errors import BinaryMissingError, RigError
from simiankube.testing.controlplane.kwok import KWOK_NODE_LABEL, NODE_CAPACITY, NODES, POD_CIDR
from simiankube.testing.controlplane.pki import kubeconfig_for_token
from simiankube.testing.controlplane.processes import free_port, pid_alive, port_is_listening
from simiankube.testing.controlplane.rig import STATE_FILE, ControlPlane, read_state, stop_rig

__all__ = [
    "BINARIES",
    "NODE_BINARIES",
    "CONTROL_PLANE_BINARIES",
    "KWOK_NODE_LABEL",
    "NODES",
    "NODE_CAPACITY",
    "POD_CIDR",
    "REPO_ROOT",
    "SERVICE_ACCOUNT_ISSUER",
    "SERVICE_CLUSTER_IP_RANGE",
    "STATE_FILE",
    "BinaryMissingError",
    "ControlPlane",
    "RigError",
    "bin_dir",
    "binary",
    "build",
    "cache_root",
    "free_port",
    "kubeconfig_for_token",
    "main",
    "missing_binaries",
    "pid_alive",
    "port_is_listening",
    "read_state",
    "rig_dir",
    "stop_rig",
    "versions",
]
