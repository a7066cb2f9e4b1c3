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

Self-driven services (no traffic source reaches them) run the same generator
at their own rate. `keep_warm` is the floor under every edge: a dependency an
instance has not called for `keep_warm_s` gets one trace of its own (a get of
the seeded key), so an edge deep in a wide graph, where random routing sends
a small share, still carries calls.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from simiankube.contract import Dependency, NanoserviceConfig, Traffic
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
    method, key = mix.next(rng)
    body = {"value": f"v{rng.getrandbits(32)}"} if method == "PUT" else None
    started = time.monotonic()
    status = await new_trace_call(caller, config, traffic, dep, method, key, body)
    edge.observe(time.monotonic() - started)
    if status >= 500:
        edge.errors += 1
    if status == 504:
        edge.timeouts += 1


async def new_trace_call(caller: Caller, config: NanoserviceConfig, traffic: Traffic, dep: Dependency,
                         method: str, key: str, body: dict[str, str] | None) -> int:
    """One call that starts a trace, with the root SERVER span this instance emits; returns the status."""
    root = new_trace(caller.rng)
    hop = Hop(time.monotonic() + traffic.deadline_ms / 1000.0, 0, traffic.max_hops, root)
    started = time.monotonic()
    result = await caller.call_dependency(hop, dep, method, f"/kv/{key}", body=body, prefer_zone=False)
    if caller.exporter.enabled and root.sampled:
        caller.exporter.record(zipkin_span(
            root, name=f"{method} {KV_ROUTE}", kind="SERVER", service=config.service, address=caller.address,
            start=wall_time(started), duration=time.monotonic() - started,
            tags={"http.status_code": str(result.status)},
        ))
    return result.status


async def keep_warm(caller: Caller, config: NanoserviceConfig) -> None:
    """Runs until cancelled: every `keep_warm_s` (jittered, so instances do not tick together), one trace
    to each dependency this instance sent nothing to since the last look (its client counter unchanged)."""
    period = config.keep_warm_s
    if period <= 0 or not config.dependencies:
        return
    budget = Traffic(deadline_ms=config.deadline_ms, max_hops=config.max_hops)
    sent = {dep.service: 0 for dep in config.dependencies}
    calls: set[asyncio.Task[int]] = set()
    try:
        while True:
            await asyncio.sleep(period * (0.5 + caller.rng.random() / 2))
            for dep in config.dependencies:
                if caller.metrics.client(dep.service).requests == sent[dep.service]:
                    task = asyncio.create_task(new_trace_call(caller, config, budget, dep, "GET", SEEDED_KEY, None))
                    calls.add(task)
                    task.add_done_callback(calls.discard)
                sent[dep.service] = caller.metrics.client(dep.service).requests
    finally:
        for task in calls:
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)


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
