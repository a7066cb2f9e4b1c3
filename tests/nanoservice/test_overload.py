"""Load shedding: a bounded number of waiting requests, a fast 503 with a retry hint, and a retry budget."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.test_utils import BaseTestServer

from simiankube.contract import Behavior, Latency, NanoserviceConfig
from simiankube.nanoservice import keys
from simiankube.nanoservice.app import InstanceRunner, create_app
from simiankube.nanoservice.client import RetryBudget
from simiankube.nanoservice.keys import Identity
from simiankube.nanoservice.resolver import Resolver


class InstanceServer(BaseTestServer):
    """A test server for the `aiohttp_client` fixture that serves a nanoservice as its processes do."""

    def __init__(self, app: web.Application) -> None:
        super().__init__()
        self.app = app

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return InstanceRunner(self.app, **kwargs)


def slow_store(ms: float) -> NanoserviceConfig:
    return NanoserviceConfig("t", "db", "store", "us-east-1", Behavior(latency=Latency("constant", ms)), (), None)


async def test_requests_beyond_the_bound_are_shed_at_once_with_a_retry_hint(aiohttp_client: Any) -> None:
    app = create_app(slow_store(1000.0), Identity("db-0", "", "127.0.0.1", 1), resolver=Resolver({}),
                     max_in_flight=2)
    client = await aiohttp_client(InstanceServer(app))

    async def get(i: int) -> tuple[int, str | None, dict[str, Any]]:
        async with client.get(f"/kv/k{i}") as response:
            return response.status, response.headers.get("Retry-After"), await response.json()

    tasks = [asyncio.create_task(get(i)) for i in range(5)]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    first = [t.result() for t in done]
    assert all(status == 503 for status, _, _ in first)  # the shed answers come before any admitted one
    answers = sorted(await asyncio.gather(*tasks), key=lambda a: a[0])
    assert [a[0] for a in answers] == [404, 404, 503, 503, 503]
    for _, retry_after, body in answers[2:]:
        assert retry_after == "1" and body == {"error": "overloaded: 2 requests in flight, retry another instance"}
    assert app[keys.STATUS].in_flight == 0
    edge = app[keys.METRICS].server("-")
    assert edge.answers[3:] == [2, 3] and edge.errors == 3
    async with client.get("/kv/again") as response:  # the bound frees up once answers leave
        assert response.status == 404


async def test_requests_that_cannot_wait_are_never_shed(aiohttp_client: Any) -> None:
    app = create_app(slow_store(0.0), Identity("db-0", "", "127.0.0.1", 1), resolver=Resolver({}),
                     max_in_flight=1)
    client = await aiohttp_client(InstanceServer(app))

    async def get(i: int) -> int:
        async with client.get(f"/kv/k{i}") as response:
            return response.status

    assert await asyncio.gather(*(get(i) for i in range(20))) == [404] * 20


def test_retry_budget_bounds_retries_to_a_share_of_calls() -> None:
    budget = RetryBudget(ratio=0.2, reserve=10.0, balance=10.0)
    retries = 0
    for _ in range(1000):  # every call fails and wants its one retry
        budget.earn()
        retries += budget.spend()
    assert retries == 10 + 200 - 1  # the reserve, then one retry per five calls (the last one not yet earned)
    quiet = RetryBudget()
    for _ in range(100):
        quiet.earn()
    assert quiet.balance == 10.0  # savings are capped: a burst after a quiet spell gets the reserve, no more
