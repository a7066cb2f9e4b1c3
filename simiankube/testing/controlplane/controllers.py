"""kube-controller-manager and kube-scheduler: what turns workloads into scheduled pods."""

from __future__ import annotations

from pathlib import Path

from simiankube.testing.controlplane.apiserver import SERVICE_CLUSTER_IP_RANGE
from simiankube.testing.controlplane.binaries import binary


# API rates of both components as upstream's own scale tests give them: kubetest2's GCE
# clusterloader2 job (kubernetes-sigs/kubetest2, kubetest2-gce/ci-tests/clusterloader2.sh) runs
# CONTROLLER_MANAGER_TEST_ARGS and SCHEDULER_TEST_ARGS with "--kube-api-qps=100 --kube-api-burst=100",
# as kubemark's KUBEMARK_MASTER_COMPONENTS_QPS_LIMITS does. The defaults (controller-manager 20/30,
# scheduler 50/100) make 1,000 services' 2,000 pods wait minutes in the controllers' rate limiters.
# kwok needs none: its client has no rate limiter (sigs.k8s.io/kwok pkg/utils/client/clientset.go).
API_RATES = ("--kube-api-qps=100", "--kube-api-burst=100")


def _component_argv(name: str, *, kubeconfig: Path, port: int, cert_dir: Path) -> list[str]:
    """What kube-controller-manager and kube-scheduler share: credentials, a loopback port, no leader
    election, upstream's scale-test API rates."""
    return [
        str(binary(name)),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={cert_dir}",
        "--leader-elect=false",
        "--profiling=false",
        *API_RATES,
        "--v=1",
    ]


def controller_manager_argv(*, kubeconfig: Path, port: int, pki: Path, cert_dir: Path) -> list[str]:
    """Command line of kube-controller-manager (every controller, own SA credentials)."""
    return [
        *_component_argv("kube-controller-manager", kubeconfig=kubeconfig, port=port, cert_dir=cert_dir),
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--controllers=*",
    ]


def scheduler_argv(*, kubeconfig: Path, port: int, cert_dir: Path) -> list[str]:
    """Command line of kube-scheduler."""
    return _component_argv("kube-scheduler", kubeconfig=kubeconfig, port=port, cert_dir=cert_dir)
