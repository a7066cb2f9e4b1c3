"""Goodput past saturation: does a chain of nanoservices shed load or collapse into timeouts?

    .venv/bin/python benchmarks/bench_overload.py [--seconds 4] [--deadline-ms 250] [--rates 500,1000,...]

A three-service chain a → b → c (karyon, karyon, store with 1 ms of service
time) in one worker process pinned to CPU 0; an open-loop load generator on
CPU 1 sends GET /kv/key1 to `a` at a fixed rate, whatever the answers (users
do not slow down because a site is slow), each with a budget of
--deadline-ms; a user whose answer has not come within it gives up (the
connection is reset, as a client timeout does). Goodput = answers that are not 5xx and arrive within the
budget, per second. The curve goes up to the sustainable rate; past it, a
system that sheds load keeps goodput near the peak, one that queues falls
towards zero as every request waits out its budget.

On a machine shared with other work the CPU the chain gets changes from one
second to the next, and so does the sustainable rate. Each rate therefore
also prints goodput per CPU second of the chain's process (useful answers
for the work done): shedding keeps it near the peak's past saturation,
work wasted on answers nobody waits for any more makes it fall; the last
line gives both ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_nanoservice import chain, cpu_seconds, start  # noqa: E402

from simiankube import contract  # noqa: E402

SLOW = {"latency": {"distribution": "constant", "meanMs": 1}}


class Connection(asyncio.Protocol):
    """One keep-alive connection; the generator sends on it only when it is idle."""

    def __init__(self, pool: list[Connection], good: list[int], deadline: float) -> None:
        self.pool, self.good, self.deadline = pool, good, deadline
        self.buffer = b""
        self.sent = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.pool.append(self)

    def send(self, request: bytes) -> None:
        self.sent = time.monotonic()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15:].split(b"\r\n")[0]) if at >= 0 else 0
        if len(self.buffer) < end + 4 + length:
            return
        status = int(self.buffer[9:12])
        self.buffer = self.buffer[end + 4 + length:]
        if status < 500 and time.monotonic() - self.sent <= self.deadline:
            self.good[0] += 1
        self.sent = 0.0
        self.pool.append(self)

    def late(self, now: float) -> bool:
        """Past its deadline without an answer: the user gives up (reset, like a client timeout)."""
        if self.sent and now - self.sent > self.deadline:
            self.transport.abort()
            return True
        return False


async def offer(address: str, rate: float, seconds: float, deadline_ms: float) -> tuple[float, float]:
    """(goodput per second, share of requests that found no idle connection within 1,000 connections)."""
    loop = asyncio.get_running_loop()
    request = (f"GET /kv/key1 HTTP/1.1\r\nHost: {address}\r\n"
               f"x-simiankube-deadline-ms: {deadline_ms:g}\r\n\r\n").encode()
    idle: list[Connection] = []
    busy: set[Connection] = set()
    good = [0]
    opened, unsent, sent = 0, 0, 0
    started = time.monotonic()
    tick = 0.001
    while (now := time.monotonic()) - started < seconds:
        for connection in [c for c in busy if c.sent == 0.0 or c.late(now)]:
            busy.discard(connection)
            opened -= connection.sent != 0.0  # reset: its slot is free for a new connection
        due = int((now - started) * rate) - sent - unsent
        for _ in range(due):
            if idle:
                connection = idle.pop()
            elif opened < 1000:
                opened += 1
                _, connection = await loop.create_connection(lambda: Connection(idle, good, deadline_ms / 1000),
                                                             address, contract.HTTP_PORT)
                idle.remove(connection)
            else:
                unsent += 1
                continue
            connection.send(request)
            busy.add(connection)
            sent += 1
        await asyncio.sleep(tick)
    await asyncio.sleep(deadline_ms / 1000)  # answers still on their way within the budget
    return good[0] / seconds, unsent / max(sent + unsent, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--deadline-ms", type=float, default=250.0)
    parser.add_argument("--rates", default="250,500,1000,1500,2000,3000,4000,6000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nodes = chain(Path(tmp), "overload", SLOW)
        process = start(Path(tmp), [nodes["c"], nodes["b"], nodes["a"]], 0, "chain")
        os.sched_setaffinity(0, {1})

        def measure(rate: float) -> tuple[float, float, float]:
            """(goodput per second, goodput per CPU second of the chain, share not sent)."""
            cpu = cpu_seconds(process.pid)
            goodput, unsent = asyncio.run(offer(nodes["a"].address, rate, args.seconds, args.deadline_ms))
            used = cpu_seconds(process.pid) - cpu
            return goodput, goodput * args.seconds / max(used, 1e-3), unsent

        try:
            curve = []
            for rate in (float(r) for r in args.rates.split(",")):
                goodput, per_cpu, unsent = measure(rate)
                curve.append((rate, goodput, per_cpu))
                print(f"offered {rate:7,.0f}/s → goodput {goodput:7,.0f}/s ({goodput / rate:4.0%}), "
                      f"{per_cpu:7,.0f} per CPU second"
                      + (f", {unsent:.0%} not sent (1,000 connections busy)" if unsent else ""), flush=True)
                time.sleep(1)  # let queues drain between rates
            peak_rate, peak, peak_per_cpu = max(curve, key=lambda c: c[1])
            goodput, per_cpu, _ = measure(2 * peak_rate)
            print(f"peak goodput {peak:,.0f}/s at {peak_rate:,.0f}/s offered; at twice that ({2 * peak_rate:,.0f}/s) "
                  f"goodput {goodput:,.0f}/s = {goodput / peak:.0%} of the peak; per CPU second "
                  f"{per_cpu:,.0f} = {per_cpu / peak_per_cpu:.0%} of the peak's {peak_per_cpu:,.0f}")
        finally:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
