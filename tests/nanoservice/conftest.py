"""Real nanoservices on loopback for tests: an architecture → processes over sockets.

The configurations and the hosts table come from the production path
(spec → expand → render → `localrun.plan`); a test chooses which instances
share a process, so it can SIGKILL, SIGSTOP or SIGTERM exactly the ones it
means to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from simiankube import contract
from simiankube.localrun.runner import Planned, plan
from simiankube.localrun.report import parse_scrape
from simiankube.model.spec import parse_document
from simiankube.testing.wait import wait_for
from simiankube.model.topology import expand

FAST = {"latency": {"distribution": "constant", "meanMs": 0}}


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    """(status, JSON body or {}) — HTTP errors are results here, not exceptions."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if body is not None and not isinstance(body, bytes):
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = {"text": raw.decode(errors="replace")}
    return status, parsed if isinstance(parsed, dict) else {"value": parsed}


class Mesh:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.nodes: dict[str, Planned] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.zipkin = str(tmp_path / "spans.jsonl")

    def load(self, services: list[dict[str, Any]], **spec: Any) -> dict[str, Planned]:
        """Plan an architecture (behaviour defaults to no service time; no service drives itself unless
        `traffic={"selfDriven": True}`: a test sends what it means to); nothing starts yet."""
        spec["traffic"] = {"selfDriven": False, **spec.get("traffic", {})}
        for service in services:
            service.setdefault("behavior", FAST)
            service.setdefault("regions", 1)
            service.setdefault("dependencies", [])
        document = {
            "apiVersion": f"{contract.API_GROUP}/{contract.API_VERSION}",
            "kind": contract.KIND,
            "metadata": {"name": "t"},
            "spec": {"arch": "t", "services": services, **spec},
        }
        planned = plan(expand(parse_document(document)), self.tmp, seed=7, zipkin_file=self.zipkin)
        self.nodes = {p.name: p for p in planned}
        return self.nodes

    def service(self, name: str) -> list[Planned]:
        return [p for p in self.nodes.values() if p.instance.service.name == name]

    def start(self, *names: str, **launch: Any) -> subprocess.Popen[bytes]:
        """One worker process hosting the named instances (`launch`: Launch fields to change); returns when all
        are ready."""
        members = [self.nodes[n] for n in names]
        spec = self.tmp / f"worker-{len(self.processes)}.json"
        launches = [asdict(replace(m.launch, **launch)) for m in members]
        spec.write_text(json.dumps({"parent": os.getpid(), "launches": launches}))
        log = open(self.tmp / f"worker-{len(self.processes)}.log", "ab")
        process = subprocess.Popen([sys.executable, "-m", "simiankube.localrun.worker", str(spec)],
                                   stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        self.processes.append(process)
        for member in members:
            wait_for(lambda: process.poll() is None and self.ready(member), 30, interval=0.05,
                     message=f"{member.name} ready")
        return process

    def start_all(self) -> subprocess.Popen[bytes]:
        return self.start(*self.nodes)

    def ready(self, node: Planned) -> bool:
        try:
            return http("GET", self.url(node, contract.PATH_READY), timeout=1)[0] == 200
        except OSError:
            return False

    def url(self, node: Planned | str, path: str) -> str:
        node = self.nodes[node] if isinstance(node, str) else node
        return f"http://{node.address}:{contract.HTTP_PORT}{path}"

    def call(self, node: Planned | str, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        return http(method, self.url(node, path), body, headers)

    def metric(self, node: Planned | str, name: str) -> float:
        """One instance's total of a metric (e.g. "server_requests_total"), all edges summed."""
        with urllib.request.urlopen(self.url(node, contract.PATH_METRICS), timeout=5) as response:
            scrape = parse_scrape(response.read().decode())
        return sum(v for k, v in scrape.items() if k[0] == name)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    m = Mesh(tmp_path)
    yield m
    m.close()
