"""CPU per outgoing call: the nanoservice's keep-alive pool vs aiohttp's ClientSession (what calls used before).

    .venv/bin/python benchmarks/bench_client.py [--calls 20000] [--concurrency 32] [--rounds 3]

A trivial aiohttp server runs in a subprocess; this process makes the calls
on uvloop, `--concurrency` at a time, and counts its own CPU seconds (user +
system, so the figure holds on a loaded machine: time spent waiting for a CPU
is not counted). The aiohttp row does what the Caller did before: a task per
call, shielded under a timeout so a late answer keeps its connection, a
shared unbounded TCPConnector and no cookie jar. Both send the same request
line and headers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import uvloop

from simiankube.nanoservice.pool import Pool, authority, request_head

SERVER = """
import sys
from aiohttp import web
async def answer(request):
    return web.Response(body=b'{"value": "v"}', content_type="application/json")
app = web.Application()
app.router.add_get("/kv/{key}", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""
HEADERS = {"x-simiankube-deadline-ms": "995.000", "x-simiankube-hops": "2", "x-simiankube-max-hops": "10",
           "x-simiankube-caller": "web", "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
TIMEOUT = 1.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def drive(call: Callable[[], Awaitable[int]], calls: int, concurrency: int) -> float:
    """CPU microseconds of this process per call."""
    left = [calls]

    async def loop() -> None:
        while left[0] > 0:
            left[0] -= 1
            if await call() != 200:
                raise RuntimeError("the server did not answer 200")

    started = time.process_time()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return (time.process_time() - started) / calls * 1e6


async def with_aiohttp(port: int, calls: int, concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=5.0, use_dns_cache=False)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT + 1.0)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                     skip_auto_headers=("User-Agent",)) as session:
        async def exchange() -> tuple[int, bytes]:
            async with session.request("GET", f"http://127.0.0.1:{port}/kv/key1", headers=HEADERS,
                                       timeout=timeout) as response:
                return response.status, await response.read()

        async def call() -> int:
            task = asyncio.ensure_future(exchange())
            async with asyncio.timeout(TIMEOUT):
                status, body = await asyncio.shield(task)
            json.loads(body)
            return status

        await drive(call, concurrency * 10, concurrency)  # warm the pool
        return await drive(call, calls, concurrency)


async def with_pool(port: int, calls: int, concurrency: int) -> float:
    pool = Pool(idle_seconds=5.0, late_seconds=1.0)

    async def call() -> int:
        head = request_head("GET", "/kv/key1", authority("127.0.0.1", port), HEADERS.items(), None)
        status, body = await pool.request("GET", "127.0.0.1", port, head, None, TIMEOUT)
        json.loads(body)
        return status

    await drive(call, concurrency * 10, concurrency)
    try:
        return await drive(call, calls, concurrency)
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the test server did not start") from None
                time.sleep(0.1)
        rows: dict[str, list[float]] = {"aiohttp ClientSession": [], "nanoservice pool": []}
        for _ in range(args.rounds):  # interleaved: a change in the machine's load hits both alike
            rows["aiohttp ClientSession"].append(
                uvloop.run(with_aiohttp(port, args.calls, args.concurrency)))
            rows["nanoservice pool"].append(uvloop.run(with_pool(port, args.calls, args.concurrency)))
    finally:
        server.terminate()
        server.wait()
    load = open("/proc/loadavg").read().split()[0]
    print(f"client CPU per call, {args.calls} calls x {args.rounds} rounds, {args.concurrency} in flight "
          f"(load average {load}):")
    for name, figures in rows.items():
        print(f"  {name:22} " + "  ".join(f"{f:5.1f}" for f in figures) + f"  us (best {min(figures):.1f})")
    print(f"  ratio of the bests: {min(rows['aiohttp ClientSession']) / min(rows['nanoservice pool']):.2f}x")


if __name__ == "__main__":
    main()
