"""Interrupting a rig leaves nothing behind: no process, no listening port, no directory.

Each case starts a second, independent rig in a subprocess (the way a test
session or a person would), checks it works, interrupts it and inspects what
is left.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from simiankube.testing.controlplane import (
    STATE_FILE,
    binary,
    pid_alive,
    port_is_listening,
    read_state,
)
from simiankube.testing.wait import wait_for

pytestmark = pytest.mark.controlplane

START_TIMEOUT = 180.0
STOP_TIMEOUT = 60.0

LIBRARY_SCRIPT = textwrap.dedent(
    """
    import signal, sys
    from pathlib import Path
    from simiankube.testing.controlplane import ControlPlane

    with ControlPlane(Path(sys.argv[1])):
        print("READY", flush=True)
        while True:
            signal.pause()
    """
)


def started_rig(workdir: Path, proc: subprocess.Popen[str] | None = None) -> dict[str, Any]:
    """Wait until the rig in ``workdir`` (run by ``proc``, if given) is ready; return its state."""

    def ready() -> dict[str, Any] | None:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"rig process exited with {proc.returncode}:\n{out}")
        state = read_state(workdir) if (workdir / STATE_FILE).exists() else None
        return state if state and state["ready"] else None

    state = wait_for(ready, START_TIMEOUT, message=f"rig in {workdir} ready")
    assert len(state["processes"]) == 5
    nodes = subprocess.run(
        [str(binary("kubectl")), f"--kubeconfig={workdir / 'kubeconfig'}", "get", "nodes"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert nodes.returncode == 0, nodes.stderr
    assert nodes.stdout.count(" Ready ") == 3
    return state


def assert_nothing_left(workdir: Path, state: dict[str, Any]) -> None:
    pids = [p["pid"] for p in state["processes"]]
    wait_for(
        lambda: not any(pid_alive(pid) for pid in pids),
        STOP_TIMEOUT,
        message="all rig processes gone",
    )
    listening = [port for port in state["ports"].values() if port_is_listening(port)]
    assert listening == []
    assert not workdir.exists(), sorted(str(p) for p in workdir.rglob("*"))


@pytest.mark.parametrize(
    ("mode", "signum"),
    [("run-command", signal.SIGINT), ("library", signal.SIGTERM)],
    ids=["run-command-SIGINT", "library-SIGTERM"],
)
def test_interrupted_rig_leaves_nothing_behind(
    rig_binaries: Path, tmp_path: Path, mode: str, signum: int
) -> None:
    workdir = tmp_path / "rig"
    if mode == "library":
        argv = [sys.executable, "-c", LIBRARY_SCRIPT, str(workdir)]
    else:
        argv = [sys.executable, "-m", "simiankube.testing.controlplane", "run", str(workdir)]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        state = started_rig(workdir, proc)
        assert state["pid"] == proc.pid

        proc.send_signal(signum)
        proc.wait(timeout=STOP_TIMEOUT)
    finally:
        if proc.poll() is None:  # only on test failure: don't leak the rig
            proc.kill()
            subprocess.run(
                [sys.executable, "-m", "simiankube.testing.controlplane", "down", str(workdir)],
                check=False,
            )
    assert_nothing_left(workdir, state)


def test_up_then_down_from_another_process(rig_binaries: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "rig"
    cli = [sys.executable, "-m", "simiankube.testing.controlplane"]
    up = subprocess.run(
        [*cli, "up", str(workdir)], capture_output=True, text=True, timeout=START_TIMEOUT
    )
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.strip() == f"export KUBECONFIG={workdir / 'kubeconfig'}"
        state = json.loads((workdir / STATE_FILE).read_text())
        assert state["ready"]
        # `up` returned while the rig keeps running in its own session
        assert pid_alive(state["pid"])
        started_rig(workdir)
    finally:
        down = subprocess.run(
            [*cli, "down", str(workdir)], capture_output=True, text=True, timeout=STOP_TIMEOUT
        )
    assert down.returncode == 0, down.stderr
    assert not pid_alive(state["pid"])
    assert_nothing_left(workdir, state)
