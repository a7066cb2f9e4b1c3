"""CoreDNS as a pod (``k8s-app: kube-dns`` in kube-system), as kubeadm and kind run it.

A pod, not a host process, so the DNS egress rules of the project's
NetworkPolicies meet a real DNS server behind a real Service. No ``forward``
plugin (no upstream is reachable) and therefore no ``loop`` plugin: see :data:`COREFILE`.
"""

from __future__ import annotations

from typing import Any, Final

from simiankube.testing.controlplane.node import CLUSTER_DNS_IP, CLUSTER_DOMAIN

NAMESPACE: Final = "kube-system"
NAME: Final = "coredns"
LABELS: Final = {"k8s-app": "kube-dns"}

#: Like kubeadm's (and so kind's) default: cluster.local answers are never cached, so a name whose
#: pods just became ready resolves at once (a cached denial kept the new pods of a headless `-peers`
#: Service unknown to their callers for up to 30 s after Ready). No upstream can be reached, so
#: names outside the cluster get the NXDOMAIN an upstream would give instead of SERVFAIL: the
#: last search-list lookup of an unknown cluster name then fails for good, not "try again".
COREFILE: Final = f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        ttl 30
    }}
    cache 30 {{
        disable success {CLUSTER_DOMAIN}
        disable denial {CLUSTER_DOMAIN}
    }}
    loadbalance
}}
.:53 {{
    errors
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"""


def image(coredns_version: str) -> str:
    """The image reference rig/images.sh builds the CoreDNS image under."""
    return f"registry.k8s.io/coredns/coredns:{coredns_version}"


def manifests(coredns_version: str) -> list[dict[str, Any]]:
    """ServiceAccount, RBAC, ConfigMap, Deployment and the kube-dns Service."""
    meta = {"name": NAME, "namespace": NAMESPACE}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(meta)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": dict(meta),
            "data": {"Corefile": COREFILE},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {**meta, "labels": dict(LABELS)},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": dict(LABELS)},
                "template": {
                    "metadata": {"labels": dict(LABELS)},
                    "spec": {
                        "serviceAccountName": NAME,
                        "dnsPolicy": "Default",
                        "priorityClassName": "system-cluster-critical",
                        "containers": [
                            {
                                "name": "coredns",
                                "image": image(coredns_version),
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                ],
                                "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns"}],
                                # The only replica: unready means no DNS for any pod, killed means
                                # a restart at the worst time. With 1 s probes on a busy 2-core node
                                # (migration step 9, load 130) its liveness failed and it was restarted.
                                # Liveness is upstream's (kubernetes/kubernetes cluster/addons/dns).
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    "periodSeconds": 2,
                                    "timeoutSeconds": 5,
                                    "failureThreshold": 5,
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/health", "port": 8080},
                                    "initialDelaySeconds": 60,
                                    "periodSeconds": 10,
                                    "timeoutSeconds": 5,
                                    "failureThreshold": 5,
                                },
                                # Upstream's request: CPU shares well above pods requesting a few millicores.
                                "resources": {"requests": {"cpu": "100m", "memory": "70Mi"}},
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": NAME}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": NAMESPACE, "labels": dict(LABELS)},
            "spec": {
                "clusterIP": CLUSTER_DNS_IP,
                "selector": dict(LABELS),
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        },
    ]
