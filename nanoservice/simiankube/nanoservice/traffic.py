"""The traffic source (denominator): a new trace every tick, gets and puts.

Ticks are scheduled on absolute times so the rate does not drift with the
work; a tick that would exceed MAX_IN_FLIGHT user requests is skipped (and
counted as an error) rather than letting requests pile up without bound.
"""

from __future__ import annotations

import asyncio
import time

from simiankube.contract import NanoserviceConfig, Traffic
from simiankube.nanoservice.client import Caller
from simiankube.nanoservice.hop import Hop
from simiankube.nanoservice.tracing import new_trace

KEY_SPACE = 1000  # keys key0..key999: gets hit what puts wrote, stores stay small
MAX_IN_FLIGHT = 1000


async def user_request(caller: Caller, config: NanoserviceConfig, traffic: Traffic) -> None:
    rng = caller.rng
    dep = rng.choice(config.dependencies)
    edge = caller.metrics.traffic(dep.service)
    edge.requests += 1
    hop = Hop(time.monotonic() + traffic.deadline_ms / 1000.0, 0, traffic.max_hops, new_trace(rng))
    key = f"key{rng.randrange(KEY_SPACE)}"
    started = time.monotonic()
    if rng.random() * 100.0 < traffic.put_percent:
        result = await caller.call_dependency(hop, dep, "PUT", f"/kv/{key}", body={"value": f"v{rng.getrandbits(32)}"},
                                              prefer_zone=False)
    else:
        result = await caller.call_dependency(hop, dep, "GET", f"/kv/{key}", prefer_zone=False)
    edge.observe(time.monotonic() - started)
    if result.status >= 500:
        edge.errors += 1
    if result.status == 504:
        edge.timeouts += 1


async def generate(caller: Caller, config: NanoserviceConfig, traffic: Traffic) -> None:
    """Runs until cancelled; cancelling it cancels the user requests in flight."""
    if not config.dependencies:
        return
    interval = traffic.interval_ms / 1000.0
    in_flight: set[asyncio.Task[None]] = set()
    next_tick = time.monotonic()
    try:
        while True:
            if len(in_flight) < MAX_IN_FLIGHT:
                task = asyncio.create_task(user_request(caller, config, traffic))
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
