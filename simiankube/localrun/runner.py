"""`simiankube run FILE`: the whole architecture on this machine, no cluster.

The same render step as for Kubernetes produces the configurations (taken
from the rendered ConfigMaps, byte for byte). Every instance is a real
nanoservice listening on its own loopback address (127.x.y.z) and the
configured port, and finds the others through a hosts table that mirrors the
cluster's Services, so zone preference, retries and ejection behave as in
pods. Instances share a few worker processes (one per core), each instance
on its own socket; the chaos victim gets a process of its own so that the
monkey's kill is a real SIGKILL, and a ReplicaSet-like restart follows.
Trace starters (traffic sources and self-driven services, `Architecture.starts_traces`) share a process
and start last, once everything they call is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import aiohttp

from simiankube import contract
from simiankube.nanoservice.launch import Launch
from simiankube.nanoservice.resolver import HostEntry, hosts_table_json
from simiankube.segmentation.scenario import expected_service_matrix
from simiankube.render import RenderSettings, render
from simiankube.render.nanoconfig import build_target, instance_host
from simiankube.localrun.report import Report, Scrape, build_report, combine, parse_scrape
from simiankube.model.spec import Architecture
from simiankube.model.topology import Instance, Topology, expand

READY_TIMEOUT = 60.0  # seconds for every instance of a process to answer /readyz
RESTART_DELAY = 2.0  # the victim comes back this long after the kill, like a ReplicaSet's new pod
STOP_TIMEOUT = 12.0  # SIGTERM, then SIGKILL after this long
SCRAPE_INTERVAL = 2.0  # progress: the traffic sources' and the victim's /metrics (all of them at the end)
SCRAPE_CONCURRENCY = 32  # /metrics requests in flight at once
FINAL_SCRAPE_ATTEMPTS = 3  # the report is the last scrape: an instance that did not answer is asked again
MAX_INSTANCES_PER_SUBNET = 254
# Idle keep-alive connections between local instances last this long (pods: the read timeout, 10 s). A thousand
# instances spread their calls thin: a worker process called most instances less often than every 5 s, so
# about one call in seven opened a new connection (connect, accept, a new aiohttp handler, two closes) before.
KEEPALIVE_SECONDS = 60.0


class Observer(Protocol):
    """Sees what the runner sees, as it happens (the live view, `simiankube run --ui`)."""

    def scraped(self, instance: str, text: str | None, now: float) -> None:
        """One instance's /metrics text, or None when it did not answer; `now` is monotonic seconds."""

    def event(self, event: dict[str, Any]) -> None:
        """A chaos event, as the report lists it."""


class RunError(RuntimeError):
    """The run could not start or keep going (a worker died, a port was taken)."""


@dataclass(frozen=True)
class Planned:
    """One instance of the run: where it listens and which process hosts it."""

    instance: Instance
    address: str
    launch: Launch
    starts_traces: bool = False  # a traffic source or a self-driven service

    @property
    def name(self) -> str:
        return self.instance.name


@dataclass
class Worker:
    """A process hosting some instances; `incarnation` counts restarts."""

    name: str
    members: list[Planned]
    process: asyncio.subprocess.Process | None = None
    incarnation: int = 0

    @property
    def traffic(self) -> bool:
        return any(m.starts_traces for m in self.members)


def loopback_addresses(count: int, first: int) -> list[str]:
    """`count` addresses 127.A.B.C starting at subnet number `first` (A.B), skipping .0 and .255."""
    addresses = []
    for i in range(count):
        subnet, host = divmod(i, MAX_INSTANCES_PER_SUBNET)
        a, b = divmod(first + subnet, 256)
        addresses.append(f"127.{1 + a % 254}.{b}.{host + 1}")
    return addresses


def addresses_free(addresses: list[str], port: int) -> bool:
    for address in addresses:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError:
                return False
    return True


def pick_addresses(count: int) -> list[str]:
    """Free loopback addresses; another run (or test) on this machine uses other subnets."""
    rng = random.Random()
    for _ in range(20):
        addresses = loopback_addresses(count, rng.randrange(256, 254 * 256))
        if addresses_free(addresses, contract.HTTP_PORT):
            return addresses
    raise RunError(f"no free loopback subnet for {count} instances on port {contract.HTTP_PORT}")


def config_documents(topology: Topology) -> dict[str, str]:
    """workload → the nanoservice configuration exactly as its ConfigMap holds it."""
    return {
        o["metadata"]["name"]: o["data"][contract.CONFIG_KEY]
        for o in render(topology, RenderSettings())
        if o["kind"] == "ConfigMap"
    }


def hosts_table(topology: Topology, address_of: dict[str, str]) -> dict[str, list[HostEntry]]:
    """The cluster's names as a table: each Service, headless Service and StatefulSet pod name."""
    table: dict[str, list[HostEntry]] = {}
    for placement in topology.placements:
        target = build_target(placement, with_instances=False)
        entries = [HostEntry(address_of[i.name], i.zone, i.name) for i in placement.instances]
        table[target.host] = entries
        table[target.peers_host] = entries
        for instance, entry in zip(placement.instances, entries):
            table[instance_host(placement, instance.ordinal)] = [entry]
    return table


def plan(topology: Topology, workdir: Path, *, seed: int, zipkin_file: str) -> list[Planned]:
    """Write configurations and the hosts table into `workdir`; one Planned per instance."""
    instances = topology.instances
    addresses = pick_addresses(len(instances))
    address_of = {i.name: a for i, a in zip(instances, addresses)}
    hosts_path = workdir / "hosts.json"
    hosts_path.write_text(hosts_table_json(hosts_table(topology, address_of)), encoding="utf-8")
    for workload, document in config_documents(topology).items():
        (workdir / f"{workload}.json").write_text(document, encoding="utf-8")
    arch = topology.architecture
    return [
        Planned(i, address_of[i.name], Launch(
            config_path=str(workdir / f"{i.workload}.json"),
            instance=i.name,
            zone=i.zone,
            host=address_of[i.name],
            port=contract.HTTP_PORT,
            hosts_path=str(hosts_path),
            zipkin_file=zipkin_file,
            seed=seed * 100_003 + n,
            keepalive=KEEPALIVE_SECONDS,
        ), arch.starts_traces(i.service.name))
        for n, i in enumerate(instances)
    ]


def assign_workers(planned: list[Planned], victim: str, workers: int) -> list[Worker]:
    """Trace starters together, the victim alone, everything else spread over `workers` processes."""
    alone = [p for p in planned if p.name == victim]
    traffic = [p for p in planned if p.starts_traces and p.name != victim]
    rest = [p for p in planned if not p.starts_traces and p.name != victim]
    groups = [Worker(f"worker-{n}", rest[n::workers]) for n in range(min(workers, len(rest)))]
    if alone:
        groups.append(Worker("victim", alone))
    if traffic:
        groups.append(Worker("traffic", traffic))
    return groups


def choose_victim(arch: Architecture, topology: Topology, seed: int) -> str:
    """The instance the monkey will kill: one of the victim service's, chosen by the seed."""
    service = arch.chaos.victim or arch.victim
    candidates = [i.name for i in topology.instances if i.service.name == service]
    return random.Random(seed).choice(candidates) if candidates else ""


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(CPU time, time ready to run but waiting for a CPU) of a live process so far, (0, 0) when it is gone.
    The wait is its main thread's (the event loop's): the share of the machine that other jobs took."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        waited = int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError):
        return 0.0, 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), waited  # utime + stime


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class LocalRun:
    arch: Architecture
    topology: Topology
    workers: list[Worker]
    workdir: Path
    duration: float
    progress: TextIO
    victim: str = ""
    scrapes: dict[tuple[str, int], Scrape] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    peak_rss: float = 0.0
    started: float = 0.0
    cpu: float = 0.0  # CPU seconds all processes spent while traffic ran
    cpu_wait: float = 0.0  # seconds they were ready to run but waited for a CPU meanwhile
    unscraped: list[str] = field(default_factory=list)  # instances whose final counts are missing
    observer: Observer | None = None

    # -- processes -----------------------------------------------------------------

    async def spawn(self, worker: Worker) -> None:
        spec = self.workdir / f"{worker.name}.json"
        spec.write_text(json.dumps({"parent": os.getpid(), "launches": [asdict(m.launch) for m in worker.members]}))
        with open(self.workdir / f"{worker.name}.log", "ab") as log:
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "simiankube.localrun.worker", str(spec),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=log,
                start_new_session=True,  # Ctrl-C reaches the runner only; it stops workers in order
            )

    async def wait_ready(self, session: aiohttp.ClientSession, worker: Worker) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        pending = {m.address for m in worker.members}
        while pending:
            if worker.process is None or worker.process.returncode is not None:
                log = (self.workdir / f"{worker.name}.log").read_text(errors="replace")[-2000:]
                raise RunError(f"{worker.name} exited while starting:\n{log}")
            if time.monotonic() > deadline:
                raise RunError(f"{worker.name}: {len(pending)} instance(s) not ready after {READY_TIMEOUT:g} s")
            for address in list(pending):
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(f"http://{address}:{contract.HTTP_PORT}{contract.PATH_READY}",
                                           timeout=aiohttp.ClientTimeout(total=1)) as response:
                        if response.status == 200:
                            pending.discard(address)
            if pending:
                await asyncio.sleep(0.1)

    async def start(self, session: aiohttp.ClientSession, workers: list[Worker]) -> None:
        for worker in workers:
            await self.spawn(worker)
        await asyncio.gather(*(self.wait_ready(session, w) for w in workers))

    async def stop(self) -> None:
        """SIGTERM every worker (traffic first), SIGKILL what is left after STOP_TIMEOUT."""
        live = [w for w in sorted(self.workers, key=lambda w: not w.traffic)
                if w.process is not None and w.process.returncode is None]
        for worker in live:
            assert worker.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.process.pid, signal.SIGTERM)

        async def reap(worker: Worker) -> None:
            assert worker.process is not None
            try:
                await asyncio.wait_for(worker.process.wait(), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.process.pid, signal.SIGKILL)
                await worker.process.wait()

        await asyncio.shield(asyncio.gather(*(reap(w) for w in live)))

    # -- observing -----------------------------------------------------------------

    async def scrape(self, session: aiohttp.ClientSession, workers: list[Worker] | None = None, *,
                     attempts: int = 1) -> list[str]:
        """Every instance of `workers` (default all), asking again up to `attempts` times those that did not
        answer; the peak RSS of all processes either way. Returns the instances that never answered."""
        slots = asyncio.Semaphore(SCRAPE_CONCURRENCY)

        async def one(worker: Worker, member: Planned) -> bool:
            text = None
            async with slots:  # the timeout runs from sending, not from waiting behind a thousand others
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(f"http://{member.address}:{contract.HTTP_PORT}{contract.PATH_METRICS}",
                                           timeout=aiohttp.ClientTimeout(total=2)) as response:
                        if response.status == 200:
                            text = await response.text()
                            self.scrapes[(member.name, worker.incarnation)] = parse_scrape(text)
            if self.observer is not None:
                self.observer.scraped(member.name, text, time.monotonic())
            return text is not None

        pending = [(w, m) for w in (self.workers if workers is None else workers) for m in w.members]
        for _ in range(attempts):
            answered = await asyncio.gather(*(one(w, m) for w, m in pending))
            pending = [p for p, ok in zip(pending, answered) if not ok]
            if not pending:
                break
        pids = [w.process.pid for w in self.workers if w.process and w.process.returncode is None]
        self.peak_rss = max(self.peak_rss, rss_mib(os.getpid()) + sum(rss_mib(p) for p in pids))
        return [m.name for _, m in pending]

    def cpu_so_far(self) -> tuple[float, float]:
        """CPU seconds of the runner and every live worker since each started, and their waits for a CPU."""
        times = [cpu_seconds(os.getpid()),
                 *(cpu_seconds(w.process.pid) for w in self.workers if w.process and w.process.returncode is None)]
        return sum(t[0] for t in times), sum(t[1] for t in times)

    def count_cpu(self, times: tuple[float, float], sign: float = 1.0) -> None:
        self.cpu += sign * times[0]
        self.cpu_wait += sign * times[1]

    def traffic_totals(self) -> tuple[int, int]:
        """(user requests, failed ones) so far: the traffic sources' only, not the self-driven services' work."""
        total = combine(self.scrapes.values())
        users = self.arch.traffic_sources
        requests = sum(v for k, v in total.items() if k[0] == "traffic_requests_total" and k[1] in users)
        errors = sum(v for k, v in total.items() if k[0] == "traffic_errors_total" and k[1] in users)
        return int(requests), int(errors)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def event(self, kind: str, **details: Any) -> None:
        self.events.append({"t_s": round(self.elapsed(), 2), "event": kind, **details})
        if self.observer is not None:
            self.observer.event(self.events[-1])
        print(f"[{self.elapsed():6.1f}s] chaos: {kind} {self.victim}", file=self.progress, flush=True)

    async def chaos(self, session: aiohttp.ClientSession) -> None:
        """spigo's monkey: kill the victim at half time; it comes back after RESTART_DELAY."""
        await asyncio.sleep(max(0.0, self.duration / 2 - self.elapsed()))
        worker = next(w for w in self.workers if any(m.name == self.victim for m in w.members))
        assert worker.process is not None
        _, errors_before = self.traffic_totals()
        self.count_cpu(cpu_seconds(worker.process.pid))  # what the victim's process spent; its successor counts anew
        killed = time.monotonic()
        worker.process.kill()
        await worker.process.wait()
        self.event("kill", instance=self.victim, signal="SIGKILL")
        await asyncio.sleep(RESTART_DELAY)
        worker.incarnation += 1
        await self.start(session, [worker])
        self.event("ready", instance=self.victim, downtime_s=round(time.monotonic() - killed, 2))
        await asyncio.sleep(min(2.0, max(0.0, self.duration - self.elapsed() - 0.5)))
        await self.scrape(session)
        _, errors_after = self.traffic_totals()
        self.event("recovered", instance=self.victim, user_errors_since_kill=errors_after - errors_before)

    async def execute(self) -> Report:
        async with aiohttp.ClientSession() as session:
            try:
                backends = [w for w in self.workers if not w.traffic]
                await self.start(session, backends)
                await self.start(session, [w for w in self.workers if w.traffic])
                pids = ", ".join(f"{w.name}={w.process.pid}" for w in self.workers if w.process)
                print(f"{self.arch.resource_name}: {len(self.topology.instances)} instances ready in "
                      f"{len(self.workers)} processes (pids {pids})", file=self.progress, flush=True)
                self.started = time.monotonic()
                self.count_cpu(self.cpu_so_far(), -1.0)
                monkey = asyncio.create_task(self.chaos(session)) if self.victim else None
                # Progress needs the traffic sources only; the victim's counters must be read before it dies.
                # Scraping everything every interval costs the workers a large share of their CPU, so only a
                # live view (an observer: every instance's rates and readiness) gets all of them.
                watched = self.workers if self.observer is not None else [
                    w for w in self.workers if w.traffic or any(m.name == self.victim for m in w.members)]
                while self.elapsed() < self.duration:
                    await asyncio.sleep(min(SCRAPE_INTERVAL, max(0.0, self.duration - self.elapsed())))
                    await self.scrape(session, watched)
                    requests, errors = self.traffic_totals()
                    print(f"[{self.elapsed():6.1f}s/{self.duration:g}s] {requests} user requests "
                          f"({requests / max(self.elapsed(), 1e-9):.0f}/s), {errors} errors",
                          file=self.progress, flush=True)
                if monkey is not None:
                    monkey.cancel()
                    await asyncio.gather(monkey, return_exceptions=True)
                duration = self.elapsed()
                self.count_cpu(self.cpu_so_far())
                self.unscraped = await self.scrape(session, attempts=FINAL_SCRAPE_ATTEMPTS)
            finally:
                await self.stop()
        return self.report(duration)

    def report(self, duration: float) -> Report:
        counts: dict[str, int] = {}
        for i in self.topology.instances:
            counts[i.service.name] = counts.get(i.service.name, 0) + 1
        services = [(s.name, s.package, counts.get(s.name, 0)) for s in self.arch.services]
        return build_report(
            architecture=self.arch.resource_name,
            duration_s=duration,
            scrape=combine(self.scrapes.values()),
            services=services,
            traffic_sources=list(self.arch.traffic_sources),
            self_driven=[s.name for s in self.arch.services if s.name in self.arch.self_driven],
            declared_edges=self.arch.edges,
            processes=len(self.workers),
            chaos=self.events,
            peak_rss_mib=self.peak_rss,
            cpu_s=self.cpu,
            cpu_wait_s=self.cpu_wait,
            unscraped=self.unscraped,
            zipkin_file=self.workers[0].members[0].launch.zipkin_file if self.workers else "",
            expected_reachability=(
                expected_service_matrix(self.topology, spigo_names=True)
                if self.arch.segmentation.mode != "allow-all" else ""
            ),
        )


async def run_architecture(
    arch: Architecture,
    *,
    duration: float,
    seed: int,
    chaos: bool,
    zipkin_file: str,
    workers: int,
    progress: TextIO,
    observer: Observer | None = None,
) -> Report:
    topology = expand(arch)
    with tempfile.TemporaryDirectory(prefix=f"simiankube-run-{arch.resource_name}-") as tmp:
        workdir = Path(tmp)
        planned = plan(topology, workdir, seed=seed, zipkin_file=zipkin_file)
        victim = choose_victim(arch, topology, seed) if chaos else ""
        run = LocalRun(arch, topology, assign_workers(planned, victim, workers), workdir, duration, progress, victim,
                       observer=observer)
        return await run.execute()
