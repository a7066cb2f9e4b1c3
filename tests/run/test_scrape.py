"""The runner's scrape against real sockets: the report is the last scrape, so an instance that does not
answer in time is asked again, and one that never answers is named rather than silently left out."""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from simiankube import contract
from simiankube.localrun.runner import LocalRun, Planned, Worker, loopback_addresses
from simiankube.model.spec import parse_document
from simiankube.model.topology import expand
from simiankube.nanoservice.launch import Launch
from simiankube.nanoservice.metrics import Metrics

DOCUMENT = {"apiVersion": "simiankube.io/v1alpha1", "kind": "Architecture", "metadata": {"name": "scr"},
            "spec": {"services": [{"name": "db", "package": "store", "count": 3, "regions": 1}]}}


def _free_subnet() -> list[str]:
    for first in range(40_000, 40_200):
        addresses = loopback_addresses(3, first)
        try:
            for address in addresses:
                with socket.socket() as probe:
                    probe.bind((address, contract.HTTP_PORT))
        except OSError:
            continue
        return addresses
    pytest.fail("no free loopback subnet on the nanoservice port")


async def _serve(address: str, failures: int, counts: dict[str, int]) -> AsyncIterator[web.AppRunner]:
    """/metrics that fails (503) `failures` times, then answers with one served request."""
    metrics = Metrics("db", "store")
    metrics.server("www").requests += 1

    async def handler(request: web.Request) -> web.Response:
        counts[address] = counts.get(address, 0) + 1
        if counts[address] <= failures:
            return web.Response(status=503)
        return web.Response(body=metrics.exposition())

    app = web.Application()
    app.router.add_get(contract.PATH_METRICS, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, address, contract.HTTP_PORT).start()
    yield runner
    await runner.cleanup()


async def test_final_scrape_asks_again_and_names_who_never_answered(tmp_path: Path) -> None:
    arch = parse_document(DOCUMENT)
    topology = expand(arch)
    addresses = _free_subnet()
    planned = [Planned(i, a, Launch(config_path="", instance=i.name, host=a))
               for i, a in zip(topology.instances, addresses)]
    run = LocalRun(arch, topology, [Worker("worker-0", planned)], tmp_path, 1.0, io.StringIO())
    counts: dict[str, int] = {}
    # the first answers at once, the second at the third attempt, the third never
    servers = [_serve(a, failures, counts) for a, failures in zip(addresses, (0, 2, 99))]
    for server in servers:
        await anext(server)
    try:
        async with aiohttp.ClientSession() as session:
            missing = await run.scrape(session, attempts=3)
    finally:
        for server in servers:
            await anext(server, None)
    assert missing == [planned[2].name]
    assert counts == {addresses[0]: 1, addresses[1]: 3, addresses[2]: 3}
    assert sorted(name for name, _ in run.scrapes) == sorted(p.name for p in planned[:2])
    assert all(s[("server_requests_total", "db")] == 1.0 for s in run.scrapes.values())
