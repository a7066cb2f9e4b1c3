"""kube-apiserver: TLS, Node+RBAC authorization, ServiceAccount tokens, Pod Security."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from simiankube.testing.controlplane.binaries import binary

SERVICE_CLUSTER_IP_RANGE: Final = "10.96.0.0/16"
#: The ClusterIP of the ``kubernetes`` Service (first address of the range).
KUBERNETES_SERVICE_IP: Final = "10.96.0.1"
SERVICE_ACCOUNT_ISSUER: Final = "https://kubernetes.default.svc.cluster.local"

#: Names the serving certificate is valid for, besides the addresses it listens on.
SERVER_NAMES: Final = (
    KUBERNETES_SERVICE_IP,
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class Listen:
    """Where the API server listens and what it advertises as the ``kubernetes`` endpoint.

    On loopback alone there is no endpoint pods could use, so the endpoint
    reconciler is off (loopback may not be an Endpoints address). A real node
    needs the API server on an address its pods reach, advertised, with the
    reconciler on, and client credentials for the kubelets (logs, exec).
    """

    bind_address: str = "127.0.0.1"
    advertise_address: str | None = None
    kubelet_client_cert: Path | None = None
    kubelet_client_key: Path | None = None


def argv(
    *, etcd_url: str, port: int, pki: Path, cert_dir: Path, listen: Listen = Listen()
) -> list[str]:
    """Command line of the API server."""
    args = [
        str(binary("kube-apiserver")),
        f"--etcd-servers={etcd_url}",
        f"--bind-address={listen.bind_address}",
        f"--secure-port={port}",
        f"--cert-dir={cert_dir}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=PodSecurity,NodeRestriction",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--allow-privileged=true",  # as kubeadm/kind: Pod Security decides
        "--profiling=false",
        "--v=1",
    ]
    if listen.advertise_address is None:
        args += ["--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none"]
    else:
        args += [
            f"--advertise-address={listen.advertise_address}",
            # the apiserver reaches kubelets by node IP, never via the host's resolver
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        ]
    if listen.kubelet_client_cert is not None and listen.kubelet_client_key is not None:
        args += [
            f"--kubelet-client-certificate={listen.kubelet_client_cert}",
            f"--kubelet-client-key={listen.kubelet_client_key}",
        ]
    return args
