"""A worker process of `simiankube run`: hosts several nanoservice instances.

`python -m simiankube.localrun.worker SPEC.json` where SPEC holds the runner's pid
and a list of `Launch`es. The worker dies with its runner, however the runner
ends: the kernel sends SIGKILL when the parent goes (PR_SET_PDEATHSIG), and a
runner that was already gone before that was armed is caught by comparing
the parent pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import resource
import signal
import sys
from pathlib import Path

from simiankube.nanoservice.launch import Launch, run_many

PR_SET_PDEATHSIG = 1
# The cyclic collector's thresholds (generation 0, 1, 2): CPython's default (700, 10, 10) collected every few
# milliseconds under load, each time walking every request still in flight (coroutines, futures, timers,
# headers); a profile of a worker at ~1,000 calls/s had 13-16 % of its CPU in the collector. At 50,000 it runs
# every few seconds: cyclic garbage still goes, in-flight state is walked far less often.
GC_THRESHOLDS = (50_000, 20, 10)


def die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the runner's own cleanup still applies
        pass
    if os.getppid() != parent:
        os._exit(1)


def raise_file_limit() -> None:
    """Up to the hard limit: 500 instances hold 500 listening sockets and their connections, past the soft
    limit many systems start a process with (1,024), where accept() and connect() would fail with EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):  # an unlimited hard limit is not a valid soft one here
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def keep_niceness() -> None:
    """Give this worker's session the niceness the runner has. The runner starts each worker in a session of its
    own (so Ctrl-C reaches the runner only), and with the kernel's autogroups a new session is a new scheduling
    group at nice 0 that shares the CPUs equally with every other session: `nice -n -5 simiankube run` would
    change nothing for the instances without this."""
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    if nice:
        with contextlib.suppress(OSError):  # no autogroups, or not allowed to raise the priority: nice alone counts
            Path("/proc/self/autogroup").write_text(f"{nice}\n")


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    die_with_parent(int(spec["parent"]))
    raise_file_limit()
    keep_niceness()
    gc.set_threshold(*GC_THRESHOLDS)
    launches = [Launch(**item) for item in spec["launches"]]
    run_many(launches)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
