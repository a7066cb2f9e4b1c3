"""The host state a real node changes, snapshotted before bring-up and restored after.

A kubelet, containerd, the CNI plugins, kube-proxy and kube-router change the
machine outside the rig's directory: iptables and ip6tables chains and rules,
ipsets, nft tables, links (the bridge, veths), network namespaces, mounts,
cgroups, sysctls and a few well-known directories. :func:`snapshot` records
all of it; :func:`restore` removes what was added since (and only that:
other programs may change the same tables meanwhile) and resets changed
sysctls. Tests compare a snapshot taken after teardown with the one before.

Restoring touches only what the node's parts name as theirs (``KUBE-``/``CNI-``
chains and sets, ``cni-`` namespaces, the node's bridge, mounts under its
directories, ``kubepods``/``k8s.io`` cgroups): other programs on the machine
may change the same tables meanwhile, and their changes are left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from simiankube.testing.controlplane.errors import RigError
from simiankube.testing.controlplane.node import BRIDGE, NEIGHBOUR_THRESHOLDS, POD_SUBNET

#: Sysctls the kubelet, kube-proxy and the bridge plugin are known to set, and those the node raises.
SYSCTLS: Final = (
    *NEIGHBOUR_THRESHOLDS,
    "kernel.panic",
    "kernel.panic_on_oops",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "net.ipv4.ip_forward",
    "net.ipv6.conf.all.forwarding",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
)

#: Directories outside the rig's work directory the node's parts write to.
PATHS: Final = (
    "/run/containerd",
    "/run/netns",
    "/var/run/netns",
    "/var/lib/cni",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/var/lib/kube-router",
    "/var/log/containers",
    "/var/log/pods",
    "/etc/cni",
    "/opt/cni",
    "/opt/containerd",
)

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
#: How the node's bridge and pod range appear in routes and rules.
NODE_MARK_BRIDGE: Final = BRIDGE
NODE_MARK_SUBNET: Final = POD_SUBNET.rsplit(".", 1)[0] + "."
#: Prefixes of the iptables chains and ipsets kubelet, kube-proxy, kube-router and CNI make.
OWNED_PREFIXES: Final = ("KUBE-", "CNI-", "kube-router")
#: Top-level cgroups the kubelet and containerd make.
OWNED_CGROUPS: Final = ("kubepods", "kubepods.slice", "k8s.io")
IPTABLES: Final = ("iptables", "ip6tables")
#: An abstract unix socket (no file to leave behind) held while a real node runs.
LOCK_NAME: Final = b"\0simiankube-real-node"


@dataclass(frozen=True)
class Snapshot:
    """What a real node may change on the host, as comparable sets and values."""

    iptables: dict[str, frozenset[str]] = field(default_factory=dict)
    ipsets: frozenset[str] = frozenset()
    nft_tables: frozenset[str] = frozenset()
    links: frozenset[str] = frozenset()
    routes: frozenset[str] = frozenset()
    mounts: frozenset[str] = frozenset()
    netns: frozenset[str] = frozenset()
    cgroups: frozenset[str] = frozenset()
    sysctls: dict[str, str] = field(default_factory=dict)
    paths: frozenset[str] = frozenset()

    def node_view(self, roots: Iterable[Path]) -> Snapshot:
        """Only what a real node could have made: on a shared machine other programs
        mount, link and add rules meanwhile. Kept whole: ipsets, nft tables, cgroups,
        sysctls, paths; filtered: mounts (under ``roots`` or :data:`PATHS`), links
        (the bridge, veths), routes and rules naming the node, ``cni-`` namespaces.
        """
        under = [str(r).rstrip("/") + "/" for r in roots] + [p + "/" for p in PATHS]
        marks = (*OWNED_PREFIXES, NODE_MARK_BRIDGE, NODE_MARK_SUBNET)
        return Snapshot(
            iptables={
                tool: frozenset(line for line in lines if any(m in line for m in marks))
                for tool, lines in self.iptables.items()
            },
            ipsets=self.ipsets,
            nft_tables=self.nft_tables,
            links=frozenset(n for n in self.links if n == NODE_MARK_BRIDGE or n.startswith("veth")),
            routes=frozenset(
                r for r in self.routes if NODE_MARK_BRIDGE in r or NODE_MARK_SUBNET in r
            ),
            mounts=frozenset(m for m in self.mounts if any((m + "/").startswith(u) for u in under)),
            netns=frozenset(n for n in self.netns if n.startswith("cni-")),
            cgroups=self.cgroups,
            sysctls=self.sysctls,
            paths=self.paths,
        )

    def differences(self, other: Snapshot) -> dict[str, tuple[list[str], list[str]]]:
        """Per aspect: (items only in self, items only in other); empty when equal."""
        diff: dict[str, tuple[list[str], list[str]]] = {}
        for name in ("ipsets", "nft_tables", "links", "routes", "mounts", "netns", "cgroups",
                     "paths"):  # fmt: skip
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                diff[name] = (sorted(mine - theirs), sorted(theirs - mine))
        for family in sorted(set(self.iptables) | set(other.iptables)):
            mine, theirs = (
                self.iptables.get(family, frozenset()),
                other.iptables.get(family, frozenset()),
            )
            if mine != theirs:
                diff[family] = (sorted(mine - theirs), sorted(theirs - mine))
        mine_s = {f"{k}={v}" for k, v in self.sysctls.items()}
        theirs_s = {f"{k}={v}" for k, v in other.sysctls.items()}
        if mine_s != theirs_s:
            diff["sysctls"] = (sorted(mine_s - theirs_s), sorted(theirs_s - mine_s))
        return diff


def _run(*argv: str, check: bool = False) -> str:
    """Output of a host tool; empty if it is missing or fails (unless ``check``)."""
    if shutil.which(argv[0]) is None:
        if check:
            raise RigError(f"{argv[0]} not found in PATH")
        return ""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise RigError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout if result.returncode == 0 else ""


def _iptables_lines(tool: str) -> frozenset[str]:
    """``table|:chain`` and ``table|-A rule`` lines of ``<tool>-save`` (no counters)."""
    lines: set[str] = set()
    table = ""
    for line in _run(f"{tool}-save").splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            lines.add(f"{table}|:{line[1:].split()[0]}")
        elif line.startswith("-A "):
            lines.add(f"{table}|{line}")
    return frozenset(lines)


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def _sysctls() -> dict[str, str]:
    values: dict[str, str] = {}
    for key in SYSCTLS:
        with contextlib.suppress(OSError):
            values[key] = _sysctl_path(key).read_text().strip()
    return values


def _cgroups() -> frozenset[str]:
    """Top-level cgroups of every hierarchy (``hierarchy/name``)."""
    found: set[str] = set()
    for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else ():
        if hierarchy.is_symlink() or not hierarchy.is_dir():
            continue
        for entry in hierarchy.iterdir():
            if entry.is_dir():
                found.add(f"{hierarchy.name}/{entry.name}")
    return frozenset(found)


def _mounts() -> frozenset[str]:
    points = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        points.add(line.split()[4].replace("\\040", " "))
    return frozenset(points)


def snapshot() -> Snapshot:
    """Record the host state a real node may change."""
    return Snapshot(
        iptables={tool: _iptables_lines(tool) for tool in IPTABLES},
        ipsets=frozenset(_run("ipset", "list", "-n").split()),
        nft_tables=frozenset(_run("nft", "list", "tables").splitlines()),
        links=frozenset(
            line.split(":")[1].strip().split("@")[0]
            for line in _run("ip", "-o", "link").splitlines()
        ),
        routes=frozenset(
            _run("ip", "-4", "route", "show", "table", "all").splitlines()
            + _run("ip", "-6", "route", "show", "table", "all").splitlines()
        ),
        mounts=_mounts(),
        netns=frozenset(line.split()[0] for line in _run("ip", "netns", "list").splitlines()),
        cgroups=_cgroups(),
        sysctls=_sysctls(),
        paths=frozenset(p for p in PATHS if os.path.lexists(p)),
    )


def kill_cgroup_processes(before: Snapshot) -> None:
    """SIGKILL every process in a cgroup created since ``before`` (containers, their shims)."""
    for _ in range(50):
        pids: set[int] = set()
        for name in _cgroups() - before.cgroups:
            if name.split("/", 1)[1] not in OWNED_CGROUPS:
                continue
            for procs in (CGROUP_ROOT / name).rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in procs.read_text().split())
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _remove_cgroup_tree(path: Path) -> None:
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def _iptables_restore(before: Snapshot) -> None:
    for tool in IPTABLES:
        now = _iptables_lines(tool)
        added = {
            line
            for line in now - before.iptables.get(tool, frozenset())
            if any(prefix in line for prefix in OWNED_PREFIXES)
        }
        new_chains = [line.split("|:", 1) for line in added if "|:" in line]
        for table, chain in new_chains:
            _run(tool, "-w", "-t", table, "-F", chain)
        for line in sorted(added):
            table, _, rule = line.partition("|")
            if rule.startswith("-A ") and (table, rule.split()[1]) not in {
                (t, c) for t, c in new_chains
            }:
                _run(tool, "-w", "-t", table, "-D", *shlex.split(rule)[1:])
        for table, chain in new_chains:
            _run(tool, "-w", "-t", table, "-X", chain)


def _nft_restore(before: Snapshot) -> None:
    """Delete nft tables that appeared since ``before`` and hold no rule (iptables-nft's)."""
    try:
        ruleset = json.loads(_run("nft", "-j", "list", "ruleset") or "{}").get("nftables", [])
    except json.JSONDecodeError:
        return
    with_rules = {
        (item["rule"]["family"], item["rule"]["table"]) for item in ruleset if "rule" in item
    }
    for line in set(_run("nft", "list", "tables").splitlines()) - before.nft_tables:
        parts = line.split()  # "table <family> <name>"
        if len(parts) == 3 and (parts[1], parts[2]) not in with_rules:
            _run("nft", "delete", "table", parts[1], parts[2])


def _owned(name: str) -> bool:
    return name.startswith(OWNED_PREFIXES)


def restore(before: Snapshot, *, bridge: str, directories: Iterable[Path]) -> Snapshot:
    """Remove what the node added to the host since ``before``; return the state after.

    Processes are the caller's: stop them first (:func:`kill_cgroup_processes`
    ends what still runs in the node's cgroups). ``directories``: the node's
    own, whose mounts go too.
    """
    kill_cgroup_processes(before)
    roots = [str(d) for d in directories] + list(PATHS)
    new_mounts = [
        point
        for point in _mounts() - before.mounts
        if any(point == root or point.startswith(root.rstrip("/") + "/") for root in roots)
    ]
    for point in sorted(new_mounts, key=lambda p: -len(p)):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
    now = snapshot()
    for name in sorted(now.netns - before.netns):
        if name.startswith("cni-"):
            _run("ip", "netns", "delete", name)
    for line in _run("ip", "-o", "link", "show", "master", bridge).splitlines():
        _run("ip", "link", "delete", line.split(":")[1].strip().split("@")[0])
    if bridge in now.links - before.links:
        _run("ip", "link", "delete", bridge)
    _iptables_restore(before)
    for name in sorted(now.ipsets - before.ipsets):
        if _owned(name):
            _run("ipset", "destroy", name)
    _nft_restore(before)
    for name in now.cgroups - before.cgroups:
        if name.split("/", 1)[1] in OWNED_CGROUPS:
            _remove_cgroup_tree(CGROUP_ROOT / name)
    for key, value in before.sysctls.items():
        if now.sysctls.get(key) != value:
            with contextlib.suppress(OSError):
                _sysctl_path(key).write_text(value + "\n")
    for path in sorted(now.paths - before.paths):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return snapshot()


def raise_sysctls(minimums: dict[str, int]) -> None:
    """Raise each sysctl to at least its minimum (a higher value set by the host's owner stays)."""
    for key, minimum in minimums.items():
        path = _sysctl_path(key)
        if int(path.read_text().split()[0]) < minimum:
            path.write_text(f"{minimum}\n")


def set_up_bridge(name: str, address: str) -> None:
    """Create the node's bridge with the gateway address (it is also the node IP)."""
    _run("ip", "link", "add", name, "type", "bridge", check=True)
    _run("ip", "addr", "add", address, "dev", name, check=True)
    _run("ip", "link", "set", name, "up", check=True)


def hold_lock() -> socket.socket:
    """Claim the machine's single real node; the claim ends with this process.

    Raises:
        RigError: another real node runs on this machine.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(LOCK_NAME)
    except OSError:
        sock.close()
        raise RigError(
            "another real node runs on this machine (only one can: it owns the bridge, "
            "iptables chains and /run/containerd); stop it first with "
            "`python -m simiankube.testing.controlplane down DIR`"
        ) from None
    return sock


def missing_tools(tools: Iterable[str]) -> list[str]:
    """Host tools from the list that are not in PATH."""
    return [tool for tool in tools if shutil.which(tool) is None]
