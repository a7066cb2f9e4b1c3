"""The traffic source (denominator): a new trace every tick, gets and puts.

The mix is spigo's denominator's: puts of new keys (`key0`, `key1`, ...) and,
split evenly, gets of the key every data package is seeded with
(`SEEDED_KEY`) and gets of a key put earlier. spigo uses a third of each;
here the put share is `traffic.put_percent` (default a third), so the default
is spigo's mix and a user can still turn it towards reads or writes.

Ticks are scheduled on absolute times so the rate does not drift with the
work; a tick that would exceed MAX_IN_FLIGHT user requests is skipped (and
counted as an error) rather than letting requests pile up without bound.
Every user request is a trace whose root SERVER span the source emits, so
the CLIENT spans it sends have a parent in the trace.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from simiankube.contract import NanoserviceConfig, Traffic
from simiankube.nanoservice.client import Caller
from simiankube.nanoservice.hop import Hop
from simiankube.nanoservice.packages import SEEDED_KEY
from simiankube.nanoservice.tracing import KV_ROUTE, new_trace, wall_time, zipkin_span

MAX_IN_FLIGHT = 1000


@dataclass
class KeyMix:
    """spigo's denominator mix: (method, key) of the next user request."""

    put_percent: float
    written: int = 0  # keys key0..key{written-1} have been put

    def next(self, rng: random.Random) -> tuple[str, str]:
        draw = rng.random() * 100.0
        if draw < self.put_percent:
            key = f"key{self.written}"
            self.written += 1
            return "PUT", key
        if self.written == 0 or draw < self.put_percent + (100.0 - self.put_percent) / 2:
            return "GET", SEEDED_KEY
        return "GET", f"key{rng.randrange(self.written)}"


async def user_request(caller: Caller, config: NanoserviceConfig, traffic: Traffic, mix: KeyMix) -> None:
    rng = caller.rng
    dep = caller.choose_dependency(config.dependencies, prefer_zone=False)
    edge = caller.metrics.traffic(dep.service)
    edge.requests += 1
    root = new_trace(rng)
    hop = Hop(time.monotonic() + traffic.deadline_ms / 1000.0, 0, traffic.max_hops, root)
    method, key = mix.next(rng)
    started = time.monotonic()
    body = {"value": f"v{rng.getrandbits(32)}"} if method == "PUT" else None
    result = await caller.call_dependency(hop, dep, method, f"/kv/{key}", body=body, prefer_zone=False)
    elapsed = time.monotonic() - started
    edge.observe(elapsed)
    if result.status >= 500:
        edge.errors += 1
    if result.status == 504:
        edge.timeouts += 1
    if caller.exporter.enabled and root.sampled:
        caller.exporter.record(zipkin_span(
            root, name=f"{method} {KV_ROUTE}", kind="SERVER", service=config.service, address=caller.address,
            start=wall_time(started), duration=elapsed, tags={"http.status_code": str(result.status)},
        ))


async def generate(caller: Caller, config: NanoserviceConfig, traffic: Traffic) -> None:
    """Runs until cancelled; cancelling it cancels the user requests in flight."""
    if not config.dependencies:
        return
    interval = traffic.interval_ms / 1000.0
    mix = KeyMix(traffic.put_percent)
    in_flight: set[asyncio.Task[None]] = set()
    next_tick = time.monotonic()
    try:
        while True:
            if len(in_flight) < MAX_IN_FLIGHT:
                task = asyncio.create_task(user_request(caller, config, traffic, mix))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            else:
                caller.metrics.traffic(config.dependencies[0].service).errors += 1
            next_tick += interval
            delay = next_tick - time.monotonic()
            if delay < -interval:  # fell behind (a stall): skip the missed ticks, no burst
                next_tick = time.monotonic()
                delay = 0.0
            await asyncio.sleep(max(delay, 0.0))
    finally:
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
