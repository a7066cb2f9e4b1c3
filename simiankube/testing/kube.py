"""Small kubectl-based helpers for tests against the rig (see :mod:`.controlplane`)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from simiankube.testing.controlplane import ControlPlane


class Kube:
    """kubectl against a :class:`ControlPlane`, scoped to one namespace."""

    def __init__(self, cp: ControlPlane, namespace: str) -> None:
        self.cp = cp
        self.namespace = namespace

    def run(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl -n <namespace> ARGS`` (raises RigError on failure if ``check``)."""
        return self.cp.kubectl("-n", self.namespace, *args, check=check, input=input)

    def get(self, *args: str) -> dict[str, Any]:
        """``kubectl get ARGS -o json``, decoded."""
        return dict(json.loads(self.run("get", *args, "-o", "json").stdout))

    def apply(
        self, *manifests: dict[str, Any], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl apply`` the given objects into the namespace."""
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(manifests)})
        return self.run("apply", "-f", "-", input=body, check=check)

    def pods(self, selector: str) -> list[dict[str, Any]]:
        """Pods matching a label selector."""
        return list(self.get("pods", "-l", selector)["items"])


def pod_ready(pod: dict[str, Any]) -> bool:
    """Running, Ready, not being deleted, and given an IP."""
    status = pod.get("status", {})
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])
    )
    return (
        status.get("phase") == "Running"
        and ready
        and bool(status.get("podIP"))
        and "deletionTimestamp" not in pod["metadata"]
    )
