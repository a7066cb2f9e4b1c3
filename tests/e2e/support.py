"""Helpers of the end-to-end tests: helm against a rig."""

from __future__ import annotations

import os
import subprocess

from simiankube.testing.controlplane import REPO_ROOT, ControlPlane, binary

RELEASE = "sk"
RELEASE_NAMESPACE = "simiankube-system"
# The real node has 2 allocatable CPUs. The migration's step 9 runs 160 pods, and while it rolls out
# the previous step's Terminating pods and the rolling updates' surge pods hold requests too (172 seen
# at once): at the chart's default 10m that is over 1.7 CPUs next to the operator's 50m, and pods
# waited Pending on "Insufficient cpu". At 2m, `kubectl describe node` showed 310m requested in all
# during the migration. Requests only reserve room for scheduling: the pods use whatever CPU is free.
NANOSERVICE_CPU_REQUEST = "2m"


def helm(cp: ControlPlane, *args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBECONFIG=str(cp.kubeconfig))
    result = subprocess.run(
        [str(binary("helm")), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO_ROOT
    )
    assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
    return result


