"""The rig's CoreDNS manifest (no cluster needed): the only DNS replica must survive a busy node."""

from __future__ import annotations

from typing import Any

from simiankube.testing.controlplane import coredns


def container() -> dict[str, Any]:
    deployment = next(m for m in coredns.manifests("v1.15.0") if m["kind"] == "Deployment")
    found: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return found


def test_probes_tolerate_a_busy_node() -> None:
    """With 1 s probes its liveness failed at load 130 (migration step 9) and every pod lost DNS."""
    probes = container()
    assert probes["livenessProbe"]["timeoutSeconds"] == 5
    assert probes["livenessProbe"]["failureThreshold"] == 5
    assert probes["readinessProbe"]["timeoutSeconds"] == 5
    assert probes["resources"]["requests"]["cpu"] == "100m"
