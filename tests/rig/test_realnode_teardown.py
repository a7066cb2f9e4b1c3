"""A real node leaves the host exactly as it found it: after `down`, a failure, SIGINT.

Each case brings up its own real node in a subprocess (as a person or a
test session would), runs a pod on it, ends it one way, and compares the host
with a snapshot taken before: iptables/ip6tables, ipsets, nft tables, links,
routes, mounts, network namespaces, cgroups, sysctls, directories — and no
process of the node is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from simiankube.testing.controlplane import REPO_ROOT, read_state
from simiankube.testing.controlplane import host as host_state
from simiankube.testing.controlplane.processes import pid_alive

pytestmark = [pytest.mark.controlplane, pytest.mark.realnode]

START_TIMEOUT = 900.0
CLI = [sys.executable, "-m", "simiankube.testing.controlplane"]

POD = """{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper", "namespace": "default"},
 "spec": {"containers": [{"name": "main", "image": "ghcr.io/simiankube/nanoservice:0.1.0",
 "command": ["python3", "-c", "import time; time.sleep(600)"]}]}}"""

LIBRARY_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from simiankube.testing.controlplane import ControlPlane

    with ControlPlane(Path(sys.argv[1]), real_node=True) as cp:
        cp.kubectl("apply", "-f", "-", input=sys.argv[2])
        cp.kubectl("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=120s")
        print("POD-RUNNING", flush=True)
        raise RuntimeError("the test failed here")
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def _assert_restored(before: host_state.Snapshot, pids: list[int], workdir: Path) -> None:
    """The node's view of the host is as before (other programs may change the rest meanwhile)."""
    after = host_state.snapshot()
    assert before.node_view([workdir]).differences(after.node_view([workdir])) == {}
    assert [pid for pid in pids if pid_alive(pid)] == []


def _kubectl(workdir: Path, *args: str, input: str | None = None) -> str:
    from simiankube.testing.controlplane import binary

    return subprocess.run(
        [str(binary("kubectl")), f"--kubeconfig={workdir / 'kubeconfig'}", *args],
        capture_output=True, text=True, check=True, input=input, timeout=180,
    ).stdout  # fmt: skip


def test_down_restores_the_host(tmp_path: Path) -> None:
    workdir = tmp_path / "rig"
    before = host_state.snapshot()
    up = subprocess.run(
        [*CLI, "up", str(workdir), "--real-node"],
        capture_output=True, text=True, timeout=START_TIMEOUT, env=_env(),
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    assert "node simiankube-node Ready" in up.stderr
    state = read_state(workdir)
    assert state is not None
    pids = [int(state["pid"])] + [int(p["pid"]) for p in state["processes"]]
    try:
        _kubectl(workdir, "apply", "-f", "-", input=POD)
        _kubectl(workdir, "wait", "--for=condition=Ready", "pod/sleeper", "--timeout=120s")
    finally:
        down = subprocess.run([*CLI, "down", str(workdir)], capture_output=True, text=True,
                              timeout=180, env=_env())  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert not workdir.exists()
    _assert_restored(before, pids, workdir)


def test_a_failing_user_of_the_library_restores_the_host(tmp_path: Path) -> None:
    before = host_state.snapshot()
    result = subprocess.run(
        [sys.executable, "-c", LIBRARY_SCRIPT, str(tmp_path / "rig"), POD],
        capture_output=True, text=True, timeout=START_TIMEOUT, env=_env(),
    )  # fmt: skip
    assert "POD-RUNNING" in result.stdout, result.stderr[-3000:]
    assert result.returncode == 1 and "the test failed here" in result.stderr
    _assert_restored(before, [], tmp_path)


def test_sigint_during_bring_up_restores_the_host(tmp_path: Path) -> None:
    """SIGINT to `up` once containerd runs (the node half made) tears everything down."""
    workdir = tmp_path / "rig"
    before = host_state.snapshot()
    up = subprocess.Popen(
        [*CLI, "up", str(workdir), "--real-node"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
    )  # fmt: skip
    assert up.stdout is not None
    seen = []
    for line in up.stdout:
        seen.append(line)
        if "containerd serving: ok" in line:
            break
    state = read_state(workdir)
    assert state is not None, "".join(seen)
    pids = [int(state["pid"])] + [int(p["pid"]) for p in state["processes"]]
    up.send_signal(signal.SIGINT)
    assert up.wait(timeout=180) == 130
    _assert_restored(before, pids, workdir)
    assert not workdir.exists()
