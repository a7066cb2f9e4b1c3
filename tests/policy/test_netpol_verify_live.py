"""`verify` end to end against real nanoservice processes, with the kernel as the network plugin.

Each rendered pod of a three-service chain (front -> middle -> back) runs as a
real nanoservice process on its own loopback address, under its own group id.
The nanoservices probe each other through `POST /probe`; iptables rules in a
chain of this test (owner --gid-owner = the source pod, -d = the destination
pod) play the enforcing network plugin. The probes open connections from the
nanoservice process without binding a source address, so the source is told
apart by the process's group, not by `-s`.

Needs root and iptables (`apt-get install -y iptables`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest

from simiankube import contract
from simiankube.cli.segmentation import EXIT_MISMATCH, EXIT_NOT_ENFORCED, exit_code
from simiankube.segmentation.scenario import pods_from_objects
from simiankube.segmentation.reachability import Model, Namespace, Pod
from simiankube.render import RenderSettings, render
from simiankube.model.spec import parse_document
from simiankube.testing.wait import wait_for
from simiankube.model.topology import expand
from simiankube.segmentation.verify import ProbeResult, ProbeTarget, parse_probe_response, probe_request, verify

NAMESPACE = "shop"
SUBNET = "127.0.93"
FIRST_GID = 29300
CHAIN = f"SKTEST-{os.getpid()}"
CHAIN_ARCH = {
    "apiVersion": "simiankube.io/v1alpha1",
    "kind": "Architecture",
    "metadata": {"name": "chain"},
    "spec": {
        "description": "front may call middle, middle may call back; front must not reach back",
        "services": [
            {"name": "front", "package": "karyon", "count": 1, "regions": 1, "dependencies": ["middle"]},
            {"name": "middle", "package": "karyon", "count": 1, "regions": 1, "dependencies": ["back"]},
            {"name": "back", "package": "store", "count": 1, "regions": 1, "dependencies": []},
        ],
    },
}
EXPECTED = """\
-      front middle back
front  .     .      X
middle X     .      .
back   X     X      .
"""



@pytest.fixture(scope="module", autouse=True)
def root() -> None:
    """Never a silent skip: CI runs as root; anywhere else this fails and says why."""
    if os.geteuid() != 0:
        pytest.fail("needs root to add iptables rules (CI runs as root; run as root or deselect this module)")


@dataclass(frozen=True)
class Fleet:
    pods: tuple[Pod, ...]
    gids: dict[str, int]  # pod key -> group id of its process
    policies: tuple[dict, ...]
    processes: dict[str, subprocess.Popen[bytes]]


def _healthy(pod: Pod) -> bool:
    try:
        with urllib.request.urlopen(f"http://{pod.ip}:{contract.HTTP_PORT}{contract.PATH_HEALTH}", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    objects = render(expand(parse_document(CHAIN_ARCH)), RenderSettings(namespace=NAMESPACE))
    configs = {o["metadata"]["name"]: o["data"][contract.CONFIG_KEY] for o in objects if o["kind"] == "ConfigMap"}
    order = [s["name"] for s in CHAIN_ARCH["spec"]["services"]]
    rendered = sorted(pods_from_objects(objects), key=lambda p: order.index(p.labels[contract.LABEL_SERVICE]))
    pods = tuple(replace(p, ip=f"{SUBNET}.{i + 2}") for i, p in enumerate(rendered))
    workdir = Path(tempfile.mkdtemp(prefix="simiankube-verify-"))
    processes: dict[str, subprocess.Popen[bytes]] = {}
    gids = {}
    try:
        for i, pod in enumerate(pods):
            workload = pod.labels[contract.LABEL_INSTANCE]
            config = workdir / f"{workload}.json"
            config.write_text(configs[workload], encoding="utf-8")
            env = {
                **os.environ,
                contract.ENV_CONFIG: str(config),
                contract.ENV_INSTANCE: pod.name,
                contract.ENV_LISTEN: f"{pod.ip}:{contract.HTTP_PORT}",
            }
            gids[pod.key] = FIRST_GID + i
            processes[pod.key] = subprocess.Popen(
                [sys.executable, "-m", "simiankube.nanoservice"], env=env, group=gids[pod.key],
                stdout=subprocess.DEVNULL, stderr=(workdir / f"{pod.name}.log").open("wb"),
            )
        for pod in pods:
            wait_for(lambda: processes[pod.key].poll() is None and _healthy(pod), timeout=30,
                     message=f"nanoservice {pod.name} on {pod.ip} to answer {contract.PATH_HEALTH}")
        policies = tuple(o for o in objects if o["kind"] == "NetworkPolicy")
        yield Fleet(pods, gids, policies, processes)
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=20)
        shutil.rmtree(workdir, ignore_errors=True)


class Kernel:
    """iptables rules in a chain of our own: the network plugin of this test."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    @staticmethod
    def run(*args: str) -> None:
        subprocess.run(["iptables", "-w", *args], check=True, capture_output=True)

    def block(self, source: Pod, destination: Pod) -> None:
        self.run("-A", CHAIN, "-m", "owner", "--gid-owner", str(self.fleet.gids[source.key]), "-d", destination.ip,
                 "-p", "tcp", "--dport", str(contract.HTTP_PORT), "-j", "REJECT", "--reject-with", "tcp-reset")

    def enforce(self, policies: Sequence[dict]) -> int:
        """Block every pair the model says the policies block; returns how many."""
        model = Model(self.fleet.pods, [Namespace(NAMESPACE)], policies)
        blocked = [(s, d) for s in self.fleet.pods for d in self.fleet.pods
                   if s.key != d.key and not model.allowed(s, d, contract.HTTP_PORT)]
        for source, destination in blocked:
            self.block(source, destination)
        return len(blocked)


@pytest.fixture
def kernel(fleet: Fleet) -> Iterator[Kernel]:
    if shutil.which("iptables") is None:
        pytest.fail("iptables is missing: apt-get install -y iptables")
    jump = ("OUTPUT", "-d", f"{SUBNET}.0/24", "-j", CHAIN)
    Kernel.run("-N", CHAIN)
    Kernel.run("-I", *jump)
    try:
        yield Kernel(fleet)
    finally:
        Kernel.run("-D", *jump)
        Kernel.run("-F", CHAIN)
        Kernel.run("-X", CHAIN)


async def post_probe(source: Pod, targets: Sequence[ProbeTarget]) -> Sequence[ProbeResult]:
    """The local prober: the source's own nanoservice opens the connections."""
    url = f"http://{source.ip}:{contract.HTTP_PORT}/probe"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.post(url, json=probe_request(targets, 1000)) as response:
            response.raise_for_status()
            return parse_probe_response(json.loads(await response.read()))


def pod(fleet: Fleet, service: str) -> Pod:
    return next(p for p in fleet.pods if p.labels[contract.LABEL_SERVICE] == service)


async def test_every_forbidden_path_blocked_in_the_kernel_is_reported_correct(fleet: Fleet, kernel: Kernel) -> None:
    assert kernel.enforce(fleet.policies) == 4
    report = await verify(fleet.pods, [Namespace(NAMESPACE)], fleet.policies, post_probe)
    print(report.text())
    assert report.expected.text() == EXPECTED
    assert report.observed.text() == EXPECTED
    assert (report.correct, report.incorrect, report.enforced) == (9, 0, True)
    assert report.text().endswith("reachability: correct:9, incorrect:0\n")
    assert exit_code(report) == 0


async def test_one_blocked_and_one_open_path_are_both_reported(fleet: Fleet, kernel: Kernel) -> None:
    front, middle, back = pod(fleet, "front"), pod(fleet, "middle"), pod(fleet, "back")
    kernel.block(front, back)
    report = await verify(fleet.pods, [Namespace(NAMESPACE)], fleet.policies, post_probe, by_pod=True)
    print(report.text())
    assert report.observed.cell(front.name, back.name) == "X"
    assert report.observed.cell(front.name, middle.name) == "."
    assert report.comparison.cell(front.name, back.name) == "."
    assert report.comparison.cell(front.name, middle.name) == "."
    # The other forbidden paths are open: the kernel enforces only one of them.
    wrong = {(r, c) for r, c in report.comparison.pairs("X")}
    assert wrong == {(middle.name, front.name), (back.name, front.name), (back.name, middle.name)}
    assert (report.correct, report.incorrect, report.enforced) == (6, 3, True)
    assert exit_code(report) == EXIT_MISMATCH


async def test_nothing_blocked_is_reported_as_not_enforced(fleet: Fleet) -> None:
    report = await verify(fleet.pods, [Namespace(NAMESPACE)], fleet.policies, post_probe)
    print(report.text())
    assert report.observed.pairs("X") == []
    assert report.enforced is False
    assert "does not enforce NetworkPolicy" in report.text()
    assert exit_code(report) == EXIT_NOT_ENFORCED


async def test_allow_all_matches_an_open_network(fleet: Fleet) -> None:
    report = await verify(fleet.pods, [Namespace(NAMESPACE)], [], post_probe)
    assert (report.correct, report.incorrect, report.enforced) == (9, 0, None)
    assert exit_code(report) == 0
