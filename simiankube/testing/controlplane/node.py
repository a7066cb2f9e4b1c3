"""A real worker node: containerd + runc, bridge CNI, kubelet, kube-proxy, kube-router.

Pure functions here turn the node's layout into configuration files and
command lines; :mod:`.rig` runs them. The recipe and its pitfalls (no
CAP_SYS_RESOURCE, cgroup v1, sysctls, leftovers) are described in
CONTRIBUTING.md ("The real node").
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from simiankube.testing.controlplane.apiserver import SERVICE_CLUSTER_IP_RANGE
from simiankube.testing.controlplane.binaries import bin_dir, binary

NODE_NAME: Final = "simiankube-node"
#: The node's own bridge; its address is the pods' gateway and the node IP.
BRIDGE: Final = "skbr0"
POD_SUBNET: Final = "10.248.0.0/24"  # not kwok's 10.244.0.0/16
NODE_IP: Final = "10.248.0.1"
#: kube-dns Service IP (the kubelet's clusterDNS).
CLUSTER_DNS_IP: Final = "10.96.0.10"
CLUSTER_DOMAIN: Final = "cluster.local"
NODE_ZONE: Final = "a"
NODE_REGION: Final = "rig"
SANDBOX_IMAGE: Final = "registry.k8s.io/pause:3.10"
#: The containerd namespace the CRI plugin (and so the kubelet) uses.
K8S_NAMESPACE: Final = "k8s.io"
#: Kernel neighbour (ARP) table sizes the node needs, raised at bring-up and restored at teardown.
#: The table is one for the whole kernel, shared by every network namespace, and on a bridge each
#: pod keeps an entry per pod it talks to: `verify` has every pod probe every pod, so n pods need
#: about n² entries (65 pods: 4,225; 110, the kubelet's maxPods: 12,100). The kernel's defaults
#: (128/512/1024) overflow from ~32 pods on: the kernel then answers no ARP request for which it
#: cannot make an entry ("neighbor table overflow!" in dmesg), so connections between live pods
#: time out or fail with "No route to host" until entries expire (gc_stale_time, 60 s) — the mixed
#: reachability `verify` saw for minutes after a migration step. Entries cost ~340 bytes.
NEIGHBOUR_THRESHOLDS: Final = {
    "net.ipv4.neigh.default.gc_thresh1": 4096,  # below this, no garbage collection at all
    "net.ipv4.neigh.default.gc_thresh2": 16384,  # above this, entries older than 5 s are collected
    "net.ipv4.neigh.default.gc_thresh3": 32768,  # hard limit
}
#: Host tools the node needs from Debian (scripts/bootstrap.sh system).
HOST_TOOLS: Final = ("runc", "iptables", "ip6tables", "ipset", "nft", "ip", "umount")


@dataclass(frozen=True)
class NodeLayout:
    """Where everything of the node lives (all under ``root``, the rig's ``node/``)."""

    root: Path

    @property
    def containerd(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.containerd / "config.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet(self) -> Path:
        return self.root / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def runtime_endpoint(self) -> str:
        return f"unix://{self.containerd_socket}"


def containerd_config(layout: NodeLayout) -> str:
    """containerd 2.x configuration (version 3) with its own root, state and socket.

    ``restrict_oom_score_adj``: the VM lacks CAP_SYS_RESOURCE, so runc cannot
    give containers a negative OOM score. The sandbox image is pinned: it is
    imported, never pulled.
    """
    c = layout.containerd
    runc = shutil.which("runc") or "runc"
    return f"""version = 3
root = "{c / "root"}"
state = "{c / "state"}"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.image-verifier.v1.bindir"]

[grpc]
  address = "{layout.containerd_socket}"

[ttrpc]
  address = "{layout.containerd_socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{c / "opt"}"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"

[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{SANDBOX_IMAGE}"

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true

[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "runc"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
  BinaryName = "{runc}"
  Root = "{c / "runc"}"
  SystemdCgroup = false

[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["{bin_dir() / "cni"}"]
  conf_dir = "{layout.cni_conf_dir}"
"""


def cni_conflist(layout: NodeLayout) -> dict[str, Any]:
    """Bridge (own bridge and range, gateway = node IP) + portmap."""
    return {
        "cniVersion": "1.0.0",
        "name": "simiankube",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "isDefaultGateway": True,  # pods reach Service IPs through the node
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(layout.cni_ipam_dir),
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(
    layout: NodeLayout, *, pki: Path, port: int, healthz_port: int
) -> dict[str, Any]:
    """KubeletConfiguration for cgroup v1 without systemd, on a shared disk."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": layout.runtime_endpoint,
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,  # 1.35+ refuses cgroup v1 otherwise
        "failSwapOn": False,
        "oomScoreAdj": 0,  # no CAP_SYS_RESOURCE: no negative scores
        "resolvConf": "",
        "clusterDNS": [CLUSTER_DNS_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "podLogsDir": str(layout.pod_logs),
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
            "imagefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,  # imported images cannot be pulled again
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "maxPods": 250,
    }


def kube_proxy_config(kubeconfig: Path, *, healthz_port: int, metrics_port: int) -> dict[str, Any]:
    """kube-proxy, iptables mode, changing no sysctl it need not change."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": POD_SUBNET,
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "iptables": {"localhostNodePorts": False},
        "oomScoreAdj": 0,
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
    }


def write_configs(
    layout: NodeLayout, *, pki: Path, kubelet_port: int, kubelet_healthz_port: int,
    proxy_healthz_port: int, proxy_metrics_port: int,
) -> None:  # fmt: skip
    """Write every configuration file of the node."""
    for directory in (layout.containerd, layout.cni_conf_dir, layout.cni_ipam_dir,
                      layout.kubelet, layout.pod_logs, layout.config):  # fmt: skip
        directory.mkdir(parents=True, exist_ok=True)
    layout.containerd_config.write_text(containerd_config(layout))
    (layout.cni_conf_dir / "10-simiankube.conflist").write_text(
        json.dumps(cni_conflist(layout), indent=2) + "\n"
    )
    kubelet = kubelet_config(layout, pki=pki, port=kubelet_port, healthz_port=kubelet_healthz_port)
    (layout.config / "kubelet.yaml").write_text(json.dumps(kubelet, indent=2) + "\n")
    proxy = kube_proxy_config(
        layout.config / "kube-proxy.kubeconfig",
        healthz_port=proxy_healthz_port,
        metrics_port=proxy_metrics_port,
    )
    (layout.config / "kube-proxy.yaml").write_text(json.dumps(proxy, indent=2) + "\n")


def node_env() -> dict[str, str]:
    """Environment of the node's processes: the rig's shim and tools first on PATH."""
    env = dict(os.environ)
    env.pop("KUBECONFIG", None)
    env["PATH"] = f"{bin_dir()}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    return env


def containerd_argv(layout: NodeLayout) -> list[str]:
    return [str(binary("containerd")), f"--config={layout.containerd_config}"]


def kubelet_argv(layout: NodeLayout) -> list[str]:
    labels = f"topology.kubernetes.io/zone={NODE_ZONE},topology.kubernetes.io/region={NODE_REGION}"
    return [
        str(binary("kubelet")),
        f"--config={layout.config / 'kubelet.yaml'}",
        f"--kubeconfig={layout.config / 'kubelet.kubeconfig'}",
        f"--root-dir={layout.kubelet}",
        f"--cert-dir={layout.kubelet / 'pki'}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={NODE_IP}",
        f"--node-labels={labels}",
        "--v=1",
    ]


def kube_proxy_argv(layout: NodeLayout) -> list[str]:
    return [str(binary("kube-proxy")), f"--config={layout.config / 'kube-proxy.yaml'}", "--v=1"]


def kube_router_argv(layout: NodeLayout) -> list[str]:
    """kube-router as a NetworkPolicy engine only (iptables + ipset)."""
    return [
        str(binary("kube-router")),
        f"--kubeconfig={layout.config / 'kube-router.kubeconfig'}",
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        "--enable-cni=false",
        f"--hostname-override={NODE_NAME}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--health-port=0",
        "--metrics-port=0",
        "--v=1",
    ]


def cleanup_argvs(layout: NodeLayout, *, policy_engine: bool) -> list[list[str]]:
    """Commands that remove the iptables state kube-proxy and kube-router leave."""
    argvs = [[str(binary("kube-proxy")), f"--config={layout.config / 'kube-proxy.yaml'}",
              "--cleanup"]]  # fmt: skip
    if policy_engine:
        argvs.append(
            [
                str(binary("kube-router")),
                f"--kubeconfig={layout.config / 'kube-router.kubeconfig'}",
                "--cleanup-config",
            ]  # fmt: skip
        )
    return argvs


def crictl_argv(layout: NodeLayout, *args: str) -> list[str]:
    return [
        str(binary("crictl")),
        f"--runtime-endpoint={layout.runtime_endpoint}",
        f"--image-endpoint={layout.runtime_endpoint}",
        *args,
    ]


def ctr_argv(layout: NodeLayout, *args: str) -> list[str]:
    return [str(binary("ctr")), f"--address={layout.containerd_socket}", "-n", K8S_NAMESPACE, *args]


def kube_router_rbac() -> list[dict[str, Any]]:
    """Read-only access for kube-router's client certificate (user ``simiankube:kube-router``)."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "simiankube:kube-router"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["networkpolicies"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "simiankube:kube-router"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "simiankube:kube-router",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": "simiankube:kube-router",
                }
            ],
        },
    ]
