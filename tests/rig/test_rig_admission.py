"""The rig enforces what a real cluster enforces: Pod Security admission and RBAC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from simiankube.testing.kube import Kube, pod_ready
from simiankube.testing.wait import wait_for

pytestmark = pytest.mark.controlplane

TIMEOUT = 60.0


def pod(name: str, security: dict[str, Any] | None = None, **pod_spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "example.invalid/app:1"}
    if security is not None:
        container["securityContext"] = security
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container], **pod_spec},
    }


RESTRICTED_OK = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def test_restricted_pod_security_rejects_violations_and_admits_compliant_pods(
    kube: Kube,
) -> None:
    kube.cp.kubectl(
        "label", "namespace", kube.namespace, "pod-security.kubernetes.io/enforce=restricted"
    )

    rejected = kube.apply(pod("privileged", {"privileged": True}), check=False)
    assert rejected.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in rejected.stderr
    assert "privileged" in rejected.stderr
    assert "allowPrivilegeEscalation != false" in rejected.stderr

    bare = kube.apply(pod("bare"), check=False)
    assert bare.returncode != 0
    assert "runAsNonRoot != true" in bare.stderr
    assert "seccompProfile" in bare.stderr

    kube.apply(pod("compliant", RESTRICTED_OK))
    wait_for(
        lambda: pod_ready(kube.get("pod", "compliant")), TIMEOUT, message="compliant pod Running"
    )
    names = {p["metadata"]["name"] for p in kube.get("pods")["items"]}
    assert names == {"compliant"}


def test_rbac_denies_a_serviceaccount_without_permission(kube: Kube, tmp_path: Path) -> None:
    ns = kube.namespace
    kube.run("create", "serviceaccount", "nobody")
    subject = f"system:serviceaccount:{ns}:nobody"

    can_i = kube.run("auth", "can-i", "list", "pods", f"--as={subject}", check=False)
    assert can_i.returncode != 0
    assert can_i.stdout.strip() == "no"

    # A real request with the ServiceAccount's own token: authenticated (403, not 401)
    # and denied by RBAC.
    token = kube.cp.create_token(ns, "nobody")
    status, body = kube.cp.api("GET", f"/api/v1/namespaces/{ns}/pods", token=token)
    assert status == 403
    assert f'User "{subject}" cannot list resource "pods"' in body["message"]

    kubeconfig = kube.cp.kubeconfig_for_token(token, tmp_path / "nobody.kubeconfig")
    denied = kube.cp.kubectl("-n", ns, "get", "pods", kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr

    # Granting the permission flips both answers: RBAC, not a blanket deny.
    kube.run("create", "role", "pod-reader", "--verb=list", "--resource=pods")
    kube.run("create", "rolebinding", "nobody-reads", "--role=pod-reader", f"--serviceaccount={ns}:nobody")
    wait_for(
        lambda: kube.cp.api("GET", f"/api/v1/namespaces/{ns}/pods", token=token)[0] == 200,
        TIMEOUT,
        message="RoleBinding takes effect",
    )
    can_i = kube.run("auth", "can-i", "list", "pods", f"--as={subject}", check=False)
    assert can_i.stdout.strip() == "yes"
    # still nothing beyond the Role
    can_i = kube.run("auth", "can-i", "delete", "pods", f"--as={subject}", check=False)
    assert can_i.stdout.strip() == "no"
    status, _ = kube.cp.api("GET", "/api/v1/namespaces/default/pods", token=token)
    assert status == 403


def test_an_invalid_token_is_not_authenticated(kube: Kube) -> None:
    status, _ = kube.cp.api("GET", "/api/v1/namespaces/default/pods", token="not-a-token")
    assert status == 401
