"""`simiankube verify` on the control plane: judged against the render, machine-readable output.

The render of a small architecture is applied by hand (no operator), one of
its NetworkPolicies left out. kwok pods run no container, so no probe is
answered: the point here is what the expected side and the report say.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from simiankube import contract
from simiankube.model.spec import parse_document
from simiankube.model.topology import expand
from simiankube.render import RenderSettings, render
from simiankube.testing.controlplane import ControlPlane
from simiankube.testing.wait import wait_for

NAMESPACE = "verify-cli"
CHAIN = {
    "apiVersion": "simiankube.io/v1alpha1", "kind": "Architecture", "metadata": {"name": "chain"},
    "spec": {"arch": "chain", "services": [
        {"name": "front", "package": "karyon", "count": 1, "dependencies": ["back"]},
        {"name": "back", "package": "store", "count": 1},
    ]},
}
DELETED = "chain-back"  # the policy that admits only back's callers


def verify(cp: ControlPlane, arch_file: Path, output: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simiankube.cli", "verify", str(arch_file), "-n", NAMESPACE, "--kubeconfig",
         str(cp.kubeconfig), "--settle", "0", "--timeout-ms", "300", "-o", output],
        capture_output=True, text=True, timeout=180)


def test_a_deleted_policy_is_reported_in_json_and_yaml(control_plane: ControlPlane, tmp_path: Path) -> None:
    objects: list[dict[str, Any]] = render(expand(parse_document(CHAIN)), RenderSettings(namespace=NAMESPACE))
    applied = [o for o in objects if not (o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == DELETED)]
    assert len(applied) == len(objects) - 1
    control_plane.kubectl("create", "namespace", NAMESPACE)
    control_plane.kubectl("apply", "--server-side", "-f", "-",
                          input=json.dumps({"apiVersion": "v1", "kind": "List", "items": applied}))
    selector = f"{contract.LABEL_ARCHITECTURE}=chain"

    def running() -> bool:
        pods = json.loads(control_plane.kubectl("-n", NAMESPACE, "get", "pods", "-l", selector, "-o", "json").stdout)
        return len(pods["items"]) == 2 and all(
            p["status"].get("phase") == "Running" and p["status"].get("podIP") for p in pods["items"])

    wait_for(running, 120, interval=0.5, message="both pods running")
    arch_file = tmp_path / "chain.yaml"
    arch_file.write_text(yaml.safe_dump(CHAIN))

    result = verify(control_plane, arch_file, "json")
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["missingPolicies"] == [DELETED] and report["judgedAgainst"] == "rendered"
    assert report["ok"] is False
    expected = report["expected"]
    assert set(expected["rows"]) == set(expected["columns"]) == {"back", "front"}
    cells = {(r, c): expected["cells"][i][j] for i, r in enumerate(expected["rows"])
             for j, c in enumerate(expected["columns"])}
    assert cells[("front", "back")] == "." and cells[("back", "front")] == "X", "judged by the render"
    assert report["counts"]["incorrect"] == report["counts"]["unobserved"] >= 2  # kwok: no probe answered
    assert set(report) >= {"time", "legend", "enforced", "observed", "comparison"}

    as_yaml = yaml.safe_load(verify(control_plane, arch_file, "yaml").stdout)
    assert as_yaml["missingPolicies"] == [DELETED] and as_yaml["expected"] == expected
