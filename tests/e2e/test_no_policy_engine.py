"""On a real node without a policy engine, `simiankube verify` must say so: exit 4.

Brings up its own real node (``--no-policy-engine``), so it runs before the
session's ``real_node`` exists (see tests/conftest.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from simiankube.testing.controlplane import REPO_ROOT, ControlPlane, RigError
from tests.e2e.support import RELEASE, RELEASE_NAMESPACE, helm

pytestmark = [pytest.mark.controlplane, pytest.mark.realnode]


def test_verify_exits_4_where_policies_are_not_enforced(tmp_path: Path) -> None:
    cp = ControlPlane(tmp_path / "rig", real_node=True, policy_engine=False)
    try:
        cp.start()
    except RigError as error:
        pytest.fail(f"the real node did not start: {error}", pytrace=False)
    try:
        helm(cp, "install", RELEASE, "helm/simiankube", "-n", RELEASE_NAMESPACE, "--create-namespace",
             "--wait", "--timeout", "5m")  # fmt: skip
        cp.kubectl("create", "namespace", "open")
        cp.kubectl("-n", "open", "apply", "-f", str(REPO_ROOT / "architectures" / "lamp.yaml"))
        cp.kubectl("-n", "open", "wait", "architecture/lamp", "--for=condition=Ready", "--timeout=300s",
                   timeout=320)  # fmt: skip
        result = subprocess.run(
            [str(Path(sys.executable).parent / "simiankube"), "verify", "lamp", "-n", "open",
             "--kubeconfig", str(cp.kubeconfig)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 4, result.stdout + result.stderr
    finally:
        cp.stop()
