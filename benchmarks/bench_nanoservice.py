"""Nanoservice speed: one leaf's throughput on one core, and the latency a hop adds.

    .venv/bin/python benchmarks/bench_nanoservice.py [--seconds 5] [--connections 32] [--isotope PATH] [--instructions]

Throughput: a `store` nanoservice (no service time) pinned to CPU 0 with
taskset; the load generator pinned to CPU 1 — wrk when it is installed
(`apt-get install wrk`), else a small asyncio keep-alive client. Besides
req/s it reports the server's CPU time per request (user + system, from
/proc): on a machine shared with other work req/s swing with the load, the
CPU cost of a request much less.
With `--isotope PATH` (istio/tools' isotope service, built from its public
source outside this repository, e.g. `cd tools/isotope && go build -o PATH
./service`) the same measurement runs against it as a one-service topology,
in a network namespace of its own (it always binds :8080; needs root).
Hop latency: sequential requests (one in flight) straight to the leaf and
through a three-service chain a → b → c; the added latency per hop is
(chain − leaf) / 2 at each percentile.
With `--instructions` (needs valgrind: `apt-get install valgrind`) the leaf
and the trivial handler also run under callgrind, counted while wrk loads
them over 8 connections: instructions per request move far less with what
else runs on the machine than CPU time does (two runs: within 1 %), so their
ratio is the steadier one on a shared machine; slow, as each server starts
under valgrind. With 32 connections and a load average above 50 they
scattered (more requests per loop turn, wrk's own timeouts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from simiankube import contract
from simiankube.localrun.runner import Planned, plan
from simiankube.localrun.report import parse_scrape
from simiankube.model.spec import parse_document
from simiankube.model.topology import expand
from simiankube.nanoservice.packages import SEEDED_KEY

LEAF_PATH = f"/kv/{SEEDED_KEY}"  # a GET of a stored key: every data package starts with it
FAST = {"latency": {"distribution": "constant", "meanMs": 0}}


def chain(workdir: Path, name: str, leaf_behavior: dict[str, Any]) -> dict[str, Planned]:
    """The three-service chain a → b → c (karyon, karyon, store) the benchmarks load, planned as local instances
    by service name; `leaf_behavior` is the store's, the others answer at once."""
    document = {
        "apiVersion": f"{contract.API_GROUP}/{contract.API_VERSION}", "kind": contract.KIND,
        "metadata": {"name": name},
        "spec": {"arch": name, "services": [
            {"name": "c", "package": "store", "count": 1, "behavior": leaf_behavior},
            {"name": "b", "package": "karyon", "count": 1, "dependencies": ["c"], "behavior": FAST},
            {"name": "a", "package": "karyon", "count": 1, "dependencies": ["b"], "behavior": FAST},
        ]},
    }
    planned = plan(expand(parse_document(document)), workdir, seed=1, zipkin_file="")
    return {p.instance.service.name: p for p in planned}


def start(workdir: Path, members: list[Planned], cpu: int, tag: str) -> subprocess.Popen[bytes]:
    spec = workdir / f"{tag}.json"
    spec.write_text(json.dumps({"parent": os.getpid(), "launches": [asdict(m.launch) for m in members]}))
    process = subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-m", "simiankube.localrun.worker", str(spec)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for member in members:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{member.address}:8080{contract.PATH_READY}", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    return process


class Load(asyncio.Protocol):
    """One keep-alive connection sending the next GET as soon as a response is complete."""

    def __init__(self, request: bytes, counts: list[int], latencies: list[float] | None, done: asyncio.Event) -> None:
        self.request, self.counts, self.latencies, self.done = request, counts, latencies, done
        self.buffer = b""
        self.sent = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.send()

    def send(self) -> None:
        if self.done.is_set():
            self.transport.close()
            return
        self.sent = time.perf_counter()
        self.transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        length = int(re.search(rb"(?i)content-length: *(\d+)", self.buffer[:end]).group(1))  # type: ignore[union-attr]
        if len(self.buffer) < end + 4 + length:
            return
        self.buffer = self.buffer[end + 4 + length:]
        self.counts[0] += 1
        if self.latencies is not None:
            self.latencies.append(time.perf_counter() - self.sent)
        self.send()


async def drive(address: str, path: str, connections: int, seconds: float, latencies: list[float] | None) -> int:
    request = f"GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n".encode()
    counts, done = [0], asyncio.Event()
    loop = asyncio.get_running_loop()
    transports = [
        (await loop.create_connection(lambda: Load(request, counts, latencies, done), address, 8080))[0]
        for _ in range(connections)
    ]
    await asyncio.sleep(seconds)
    done.set()
    for transport in transports:
        transport.close()
    return counts[0]


TRIVIAL = """
import sys, uvloop
from aiohttp import web
async def ok(request): return web.Response(text="ok")
app = web.Application(); app.router.add_get("/kv/{key}", ok)
web.run_app(app, host=sys.argv[1], port=8080, access_log=None, print=None, loop=uvloop.new_event_loop())
"""
TRIVIAL_LOW_LEVEL = """
import asyncio, sys, uvloop
from aiohttp import web
async def ok(request): return web.Response(text="ok")
async def main():
    runner = web.ServerRunner(web.Server(ok), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, sys.argv[1], 8080).start()
    await asyncio.Event().wait()
uvloop.run(main())
"""


def trivial_baseline(address: str, seconds: float, connections: int, script: str = TRIVIAL) -> Measured:
    """The same measurement against a one-line aiohttp handler, for a machine-independent ratio."""
    process = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", script, address])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(f"http://{address}:8080/kv/x", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        return throughput(process.pid, f"http://{address}:8080{LEAF_PATH}", seconds, connections)
    finally:
        process.kill()
        process.wait()


@dataclass(frozen=True)
class Measured:
    tool: str
    rps: float
    cpu_us: float  # server CPU time per request, microseconds
    rss_mib: float  # server resident memory after the run


ISOTOPE_TOPOLOGY = """defaults:
  requestSize: 0 B
  responseSize: 40 B
services:
- name: a
  isEntrypoint: true
"""


def isotope_row(binary: str, workdir: Path, seconds: float, connections: int) -> Measured:
    """isotope's service answering `GET /` on one pinned core, in a network namespace of its own."""
    topology = workdir / "isotope.yaml"
    topology.write_text(ISOTOPE_TOPOLOGY)
    env = {**os.environ, "SERVICE_NAME": "a", "CONFIG_PATH": str(topology)}
    process = subprocess.Popen(["unshare", "-n", "sh", "-c", f"ip link set lo up && exec taskset -c 0 {binary}"
                                " --log-level none"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    inside = ["nsenter", "-t", str(process.pid), "-n"]
    try:
        deadline = time.monotonic() + 10
        while subprocess.run([*inside, sys.executable, "-c", "import urllib.request as u; "
                              "u.urlopen('http://127.0.0.1:8080/', timeout=1)"], capture_output=True).returncode:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"isotope service {binary} did not answer on :8080")
            time.sleep(0.1)
        return throughput(process.pid, "http://127.0.0.1:8080/", seconds, connections, prefix=inside)
    finally:
        process.kill()
        process.wait()


def instructions(command: list[str], url: str, seconds: float, connections: int) -> float:
    """User-space instructions per request of a server started by `command` under callgrind, counted from after
    a warm-up to the end of a wrk run."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        process = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                    f"--callgrind-out-file={out}", *command],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 600  # interpreted by valgrind, an import takes a while
            while True:
                try:
                    urllib.request.urlopen(url, timeout=5).close()
                    break
                except urllib.error.HTTPError:
                    break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError(f"{command} did not answer {url} under valgrind") from None
                    time.sleep(0.5)
            wrk = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}"]
            subprocess.run([*wrk, "-d2s", url], capture_output=True, check=True)  # warm up
            subprocess.run(["callgrind_control", "-i", "on", str(process.pid)], capture_output=True, check=True)
            run = subprocess.run([*wrk, f"-d{seconds:g}s", url], capture_output=True, text=True, check=True).stdout
            subprocess.run(["callgrind_control", "-d", str(process.pid)], capture_output=True, check=True)
            count = int(re.search(r"(\d+) requests in", run).group(1))  # type: ignore[union-attr]
            total = re.search(r"^totals: (\d+)", Path(f"{out}.1").read_text(), re.M)
            return int(total.group(1)) / max(count, 1)  # type: ignore[union-attr]
        finally:
            process.kill()
            process.wait()


def instruction_rows(workdir: Path, leaf: Planned, address: str, seconds: float, connections: int) -> None:
    spec = workdir / "leaf-valgrind.json"
    spec.write_text(json.dumps({"parent": os.getpid(), "launches": [asdict(leaf.launch)]}))
    leaf_ir = instructions([sys.executable, "-m", "simiankube.localrun.worker", str(spec)],
                           f"http://{leaf.address}:8080{LEAF_PATH}", seconds, connections)
    trivial_ir, low_ir = (instructions([sys.executable, "-c", script, address], f"http://{address}:8080{LEAF_PATH}",
                                       seconds, connections) for script in (TRIVIAL, TRIVIAL_LOW_LEVEL))
    print(f"instructions per request (callgrind): leaf {leaf_ir / 1000:,.0f} k, trivial {trivial_ir / 1000:,.0f} k,"
          f" trivial low-level {low_ir / 1000:,.0f} k → leaf/trivial {leaf_ir / trivial_ir:.2f}×,"
          f" leaf/trivial low-level {leaf_ir / low_ir:.2f}×")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(pid: int, url: str, seconds: float, connections: int, prefix: Sequence[str] = ()) -> Measured:
    before = cpu_seconds(pid)
    if shutil.which("wrk") or prefix:
        out = subprocess.run([*prefix, "taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url],
                             capture_output=True, text=True, check=True).stdout
        tool = "wrk"
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        count = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    else:
        os.sched_setaffinity(0, {1})
        address = url.split("/")[2].split(":")[0]
        tool, count = "asyncio client", asyncio.run(drive(address, LEAF_PATH, connections, seconds, None))
        rps = count / seconds
    return Measured(tool, rps, (cpu_seconds(pid) - before) / max(count, 1) * 1e6, rss_mib(pid))


def attempts(node: Planned) -> float:
    with urllib.request.urlopen(f"http://{node.address}:8080{contract.PATH_METRICS}", timeout=5) as response:
        scrape = parse_scrape(response.read().decode())
    return sum(v for k, v in scrape.items() if k[0] == "client_requests_total")


def amplification(leaf: subprocess.Popen[bytes], nodes: dict[str, Planned], users: int = 200) -> str:
    """Calls between services per user request through a → b → c once c is dead (naive retries: 27)."""
    leaf.kill()
    leaf.wait()
    before = attempts(nodes["a"]) + attempts(nodes["b"])
    statuses = set()
    for _ in range(users):
        try:
            urllib.request.urlopen(f"http://{nodes['a'].address}:8080{LEAF_PATH}", timeout=5).close()
        except urllib.error.HTTPError as err:
            statuses.add(err.code)
    factor = (attempts(nodes["a"]) + attempts(nodes["b"]) - before) / users
    return f"amplification with the leaf dead: {factor:.3f} calls per user request (answers {sorted(statuses)})"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--isotope", metavar="PATH", default="",
                        help="isotope's service binary (built from istio/tools); without it that row is skipped")
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions per request under valgrind (steady on a shared machine)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nodes = chain(Path(tmp), "bench", FAST)
        baseline = trivial_baseline(nodes["b"].address, args.seconds, args.connections)
        low_level = trivial_baseline(nodes["b"].address, args.seconds, args.connections, TRIVIAL_LOW_LEVEL)
        if args.instructions:
            instruction_rows(Path(tmp), nodes["c"], nodes["b"].address, max(args.seconds, 10.0), 8)
        processes = [start(Path(tmp), [nodes["c"]], 0, "leaf")]
        try:
            leaf = throughput(processes[0].pid, f"http://{nodes['c'].address}:8080{LEAF_PATH}", args.seconds,
                              args.connections)
            print(f"leaf throughput ({leaf.tool}, {args.connections} connections, server on 1 core): "
                  f"{leaf.rps:,.0f} req/s = {leaf.rps / baseline.rps:.0%} of a trivial aiohttp handler on this "
                  f"machine now ({baseline.rps:,.0f} req/s)")
            print(f"server CPU per request: leaf {leaf.cpu_us:.1f} µs, trivial {baseline.cpu_us:.1f} µs, trivial "
                  f"low-level (web.Server) {low_level.cpu_us:.1f} µs → leaf/trivial {leaf.cpu_us / baseline.cpu_us:.2f}×,"
                  f" leaf/trivial low-level {leaf.cpu_us / low_level.cpu_us:.2f}×")
            print(f"server RSS after the run: leaf {leaf.rss_mib:.1f} MiB, trivial {baseline.rss_mib:.1f} MiB, "
                  f"trivial low-level {low_level.rss_mib:.1f} MiB")
            if args.isotope:
                iso = isotope_row(args.isotope, Path(tmp), args.seconds, args.connections)
                print(f"isotope service: {iso.rps:,.0f} req/s, {iso.cpu_us:.1f} µs CPU per request, "
                      f"{iso.rss_mib:.1f} MiB RSS → leaf/isotope CPU per request {leaf.cpu_us / iso.cpu_us:.2f}×, "
                      f"trivial/isotope {baseline.cpu_us / iso.cpu_us:.2f}×, leaf/isotope RSS "
                      f"{leaf.rss_mib / iso.rss_mib:.2f}×")
            processes.append(start(Path(tmp), [nodes["a"], nodes["b"]], 0, "chain"))
            os.sched_setaffinity(0, {1})
            seconds = min(args.seconds, 3.0)
            direct: list[float] = []
            chained: list[float] = []
            asyncio.run(drive(nodes["c"].address, LEAF_PATH, 1, seconds, direct))
            asyncio.run(drive(nodes["a"].address, LEAF_PATH, 1, seconds, chained))
            for q in (0.5, 0.99):
                hop = (percentile(chained, q) - percentile(direct, q)) / 2 * 1000
                print(f"p{q * 100:g}: leaf {percentile(direct, q) * 1000:.3f} ms, a→b→c {percentile(chained, q) * 1000:.3f} ms"
                      f" → added per hop {hop:.3f} ms")
            print(amplification(processes[0], nodes))
        finally:
            for process in processes:
                process.kill()
                process.wait()


if __name__ == "__main__":
    main()
