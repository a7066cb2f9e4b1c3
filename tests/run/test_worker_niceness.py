"""A worker runs in a session of its own: with the kernel's autogroups that is a scheduling group of its own, so
the worker must carry the runner's niceness over to it, or `nice simiankube run` changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SWITCH = Path("/proc/sys/kernel/sched_autogroup_enabled")
AUTOGROUPS = SWITCH.exists() and SWITCH.read_text().strip() == "1"
PROBE = "from simiankube.localrun.worker import keep_niceness; keep_niceness(); print(open('/proc/self/autogroup').read())"


def autogroup_nice(nice: int) -> str:
    """The autogroup line of a process started like a worker (own session) at `nice`, after keep_niceness."""
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                            start_new_session=True, preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, nice))
    return result.stdout.split()[-1]


@pytest.mark.skipif(not AUTOGROUPS, reason="this kernel schedules without autogroups: niceness alone counts")
def test_a_worker_session_keeps_the_runners_niceness() -> None:
    assert autogroup_nice(4) == "4"  # raising niceness needs no privilege
    assert autogroup_nice(0) == "0"  # nothing to carry over: the new session's default stays
