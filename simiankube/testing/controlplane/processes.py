"""Child processes: ports, liveness, start-up hygiene and termination of process groups."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from simiankube.testing.controlplane.errors import RigError


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # state is the field after the parenthesised command name
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


_PR_SET_PDEATHSIG: Final = 1


def child_setup() -> None:  # pragma: no cover - runs in the forked child
    """Make the child die with its parent, even if the parent is SIGKILLed."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid


def terminate_groups(pids: Sequence[int], *, grace: float, wait: Callable[[int], bool]) -> None:
    """SIGTERM each process group, then SIGKILL what is left after ``grace`` seconds.

    ``wait(pid)`` returns True once that pid is gone (and reaped, if it is ours).
    """
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    remaining = list(pids)
    while remaining and time.monotonic() < deadline:
        remaining = [pid for pid in remaining if not wait(pid)]
        if remaining:
            time.sleep(0.05)
    for pid in pids:  # also kills grandchildren left in a group whose leader exited
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while remaining and time.monotonic() < deadline:
        remaining = [pid for pid in remaining if not wait(pid)]
        if remaining:
            time.sleep(0.05)
    if remaining:
        raise RigError(f"processes {remaining} survived SIGKILL")


def is_same_process(pid: int, argv0: str) -> bool:
    """Guard against pid reuse: the pid still runs the binary we started."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    return cmdline == argv0 and pid_alive(pid)
