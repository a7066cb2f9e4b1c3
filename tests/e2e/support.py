"""Helpers of the end-to-end tests: helm against a rig."""

from __future__ import annotations

import os
import subprocess

from simiankube.testing.controlplane import REPO_ROOT, ControlPlane, binary

RELEASE = "sk"
RELEASE_NAMESPACE = "simiankube-system"


def helm(cp: ControlPlane, *args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBECONFIG=str(cp.kubeconfig))
    result = subprocess.run(
        [str(binary("helm")), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO_ROOT
    )
    assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
    return result


