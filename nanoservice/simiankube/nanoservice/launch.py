"""How a nanoservice is started: from the pod's environment, or many in one process.

`Launch` is everything outside the rendered configuration that an instance
needs (its name, zone, listen address, hosts table, span sinks, seed). A pod
reads it from the environment; the local runner hands a list of them to one
process, which serves each on its own socket (`serve_many`).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import signal
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import uvloop
from aiohttp import web

from simiankube import contract
from simiankube.contract import NanoserviceConfig
from simiankube.nanoservice import keys
from simiankube.nanoservice.app import READ_TIMEOUT_SECONDS, InstanceRunner, create_app
from simiankube.nanoservice.client import new_pool
from simiankube.nanoservice.keys import Identity
from simiankube.nanoservice.pool import Pool
from simiankube.nanoservice.resolver import HostsTable, Resolver, load_hosts_table
from simiankube.nanoservice.tracing import SpanExporter

SHUTDOWN_SECONDS = 10.0  # in-flight work gets this long once the listener closed
# After SIGTERM, /readyz answers 503 while the listener still accepts for this long, so a load balancer that
# polls readiness stops sending before anything is refused (pods also sleep in preStop first: the endpoint
# is removed then). preStop + drain + shutdown stay within terminationGracePeriodSeconds (15).
DRAIN_SECONDS = 1.0


@dataclass(frozen=True)
class Launch:
    config_path: str
    instance: str
    zone: str = ""
    host: str = "0.0.0.0"
    port: int = contract.HTTP_PORT
    pod_ip: str = ""  # the address spans name; "" = the listen host (local mode listens on its own address)
    hosts_path: str = ""  # local mode: the hosts table
    zipkin_file: str = ""
    zipkin_url: str = ""
    seed: int | None = None
    read_timeout: float = READ_TIMEOUT_SECONDS  # headers and bodies
    # An idle keep-alive connection (and a new one's first headers) is closed after this long; callers let
    # theirs go at half of it. The local runner keeps them longer (see `localrun.runner.KEEPALIVE_SECONDS`).
    keepalive: float = READ_TIMEOUT_SECONDS
    drain_seconds: float = DRAIN_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Launch:
        host, _, port = env.get(contract.ENV_LISTEN, f"0.0.0.0:{contract.HTTP_PORT}").rpartition(":")
        return cls(
            config_path=env.get(contract.ENV_CONFIG, contract.CONFIG_PATH),
            instance=env.get(contract.ENV_INSTANCE) or socket.gethostname(),
            zone=env.get(contract.ENV_ZONE, ""),
            host=host or "0.0.0.0",
            port=int(port),
            pod_ip=env.get(contract.ENV_POD_IP, ""),
            hosts_path=env.get(contract.ENV_HOSTS, ""),
            zipkin_file=env.get(contract.ENV_ZIPKIN_FILE, ""),
            zipkin_url=env.get(contract.ENV_ZIPKIN_URL, ""),
        )

    def build(self, tables: dict[tuple[str, int], HostsTable] | None = None,
              pool: Pool | None = None) -> web.Application:
        """`tables`: hosts tables already loaded by this process (instances share one; it is only read);
        `pool`: the process's keep-alive pool for outgoing calls, when its instances share one."""
        config = NanoserviceConfig.from_json(Path(self.config_path).read_text(encoding="utf-8"))
        table = None
        if self.hosts_path:
            tables = {} if tables is None else tables
            key = (self.hosts_path, config.port)
            table = tables.get(key)
            if table is None:
                table = tables[key] = load_hosts_table(self.hosts_path, config.port)
        return create_app(
            config,
            Identity(self.instance, self.zone, self.pod_ip or self.host, self.seed),
            resolver=Resolver(table),
            exporter=SpanExporter(file=self.zipkin_file, url=self.zipkin_url),
            read_timeout=self.read_timeout,
            pool=pool,
        )


def run_many(launches: list[Launch]) -> None:
    """`serve_many` on uvloop (about a fifth more requests per core than asyncio's loop)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve_many(launches))


async def serve_many(launches: list[Launch]) -> None:
    """Instances in one process, each on its own socket, until SIGTERM/SIGINT; then drain all.

    Draining: readiness fails first while the listeners still accept (`drain_seconds`), then the listeners
    close and in-flight work gets SHUTDOWN_SECONDS. A slow client's headers get `keepalive` (the server's
    keep-alive timer, armed from the connection's start and after every answer), its body and the unread rest
    of a refused body `read_timeout` each."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runners = []
    tables: dict[tuple[str, int], HostsTable] = {}  # one copy of the runner's hosts table, not one per instance
    # One keep-alive pool for every instance of the process: a connection one instance opened to a callee
    # serves the others too (each call still says who calls), instead of a new connection per call.
    pool = new_pool(min((launch.keepalive for launch in launches), default=READ_TIMEOUT_SECONDS))
    try:
        for launch in launches:
            runner = InstanceRunner(launch.build(tables, pool), access_log=None,
                                    keepalive_timeout=launch.keepalive,
                                    lingering_time=launch.read_timeout)  # the rest of an unread body, too
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, launch.host, launch.port, shutdown_timeout=SHUTDOWN_SECONDS).start()
        # What startup built lives until exit: keep the cyclic collector from walking it again and again. A
        # worker hosting 500 instances tracks ~2.6 million objects; one full collection of them took seconds,
        # stalling every instance of the process at once (timeouts, reconnects, more load).
        gc.freeze()
        release_free_memory()
        await stop.wait()
        for runner in runners:
            runner.app[keys.STATUS].draining = True
        await asyncio.sleep(max((launch.drain_seconds for launch in launches), default=0.0))
    finally:
        await asyncio.gather(*(r.cleanup() for r in runners), return_exceptions=True)
        await pool.close()


def release_free_memory() -> None:
    """Hand the C heap's free pages (what startup allocated and freed) back to the kernel: about 1 MiB of a
    pod's RSS. glibc only; elsewhere nothing happens."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def main() -> None:
    """One instance per process (pods): drains on SIGTERM and exits 0."""
    run_many([Launch.from_env(os.environ)])
