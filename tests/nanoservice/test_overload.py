"""Load shedding: an adaptive bound on waiting requests, a fast 503 with a retry hint, and a retry budget."""

from __future__ import annotations

import asyncio
from typing import Any

from simiankube.contract import Behavior, Latency, NanoserviceConfig
from simiankube.nanoservice import keys
from simiankube.nanoservice.app import create_app
from simiankube.nanoservice.client import RetryBudget
from simiankube.nanoservice.keys import Identity
from simiankube.nanoservice.limit import LATE_SHARE, MIN_LIMIT, ConcurrencyLimit
from simiankube.nanoservice.resolver import Resolver


def slow_store(ms: float) -> NanoserviceConfig:
    return NanoserviceConfig("t", "db", "store", "us-east-1", Behavior(latency=Latency("constant", ms)), (), None)


async def test_requests_beyond_the_bound_are_shed_at_once_with_a_retry_hint(aiohttp_client: Any) -> None:
    app = create_app(slow_store(1000.0), Identity("db-0", "", "127.0.0.1", 1), resolver=Resolver({}),
                     max_in_flight=2)
    client = await aiohttp_client(app)

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
    assert app[keys.SERVING].limit.in_flight == 0
    edge = app[keys.METRICS].server("-")
    assert edge.answers[3:] == [2, 3] and edge.errors == 3
    async with client.get("/kv/again") as response:  # the bound frees up once answers leave
        assert response.status == 404


async def test_requests_that_cannot_wait_are_never_shed(aiohttp_client: Any) -> None:
    app = create_app(slow_store(0.0), Identity("db-0", "", "127.0.0.1", 1), resolver=Resolver({}),
                     max_in_flight=1)
    client = await aiohttp_client(app)

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


def test_a_late_answer_scales_the_bound_to_what_would_have_been_in_time() -> None:
    limit = ConcurrencyLimit(100)
    assert all(limit.admit() for _ in range(100)) and not limit.admit()  # starts at the ceiling
    limit.release(started=0.0, now=0.3, budget=0.25)  # took 300 ms of a 250 ms budget: target 125 ms
    assert limit.limit == 100 * 0.125 / 0.3
    for _ in range(50):  # the others admitted under the old bound were late too: no second cut for them
        limit.release(started=0.0, now=0.31, budget=0.25)
    assert limit.limit == 100 * 0.125 / 0.3 and limit.in_flight == 49
    assert not limit.admit()  # 49 in flight, bound 41.7: shed
    limit.release(started=0.31, now=0.5, budget=0.25)  # admitted after the cut and still late: cut again
    assert limit.limit == 100 * 0.125 / 0.3 * 0.125 / 0.19


def test_answers_in_time_raise_the_bound_about_one_per_round_trip_up_to_the_ceiling() -> None:
    limit = ConcurrencyLimit(40)
    limit.limit = 12.0
    for _ in range(12):
        assert limit.admit()
    for _ in range(12):  # in time while at least half the bound was in use (12 .. 7 of 12.0 .. 12.4): +1/bound
        limit.release(started=0.0, now=0.01, budget=1.0)
    assert abs(limit.limit - 12.4916) < 0.0001
    assert limit.admit()
    limit.release(started=0.0, now=0.01, budget=1.0)  # 1 of 12.5 in use: the bound was not what held it back
    assert abs(limit.limit - 12.4916) < 0.0001
    for _ in range(1000):  # a busy instance answering in time: the bound climbs to the ceiling, not beyond
        admitted = sum(limit.admit() for _ in range(50))
        for _ in range(admitted):
            limit.release(started=0.0, now=0.01, budget=1.0)
    assert limit.limit == 40.0 and limit.in_flight == 0


def test_slow_answers_within_their_budget_lower_nothing_and_the_floor_holds() -> None:
    limit = ConcurrencyLimit(100)
    for _ in range(100):
        limit.admit()
    for _ in range(100):  # a busy machine or a long service time: slow, but within LATE_SHARE of the budget
        limit.release(started=0.0, now=LATE_SHARE * 2.0, budget=2.0)
    assert limit.limit == 100.0
    for step in range(20):  # a stalled process: every answer far too late
        limit.admit()
        limit.release(started=float(step), now=step + 10.0, budget=0.1)
    assert limit.limit == MIN_LIMIT
    assert ConcurrencyLimit(2).floor == 2.0  # never above the ceiling


async def test_late_answers_shrink_the_bound_so_more_requests_are_shed(aiohttp_client: Any) -> None:
    app = create_app(slow_store(150.0), Identity("db-0", "", "127.0.0.1", 1), resolver=Resolver({}),
                     max_in_flight=20)
    client = await aiohttp_client(app)

    async def get(i: int, budget_ms: int) -> int:
        async with client.get(f"/kv/k{i}", headers={"x-simiankube-deadline-ms": str(budget_ms)}) as response:
            return response.status

    statuses = await asyncio.gather(*(get(i, 2000) for i in range(20)))  # 150 ms of 2 s: in time
    assert statuses == [404] * 20 and app[keys.SERVING].limit.limit == 20.0
    assert await get(0, 200) == 404  # 150 ms of 200 ms: late, the bound scales by 100/150 at most
    bound = app[keys.SERVING].limit.limit
    assert bound <= 20 * 100 / 150
    statuses = await asyncio.gather(*(get(i, 2000) for i in range(20)))
    assert statuses.count(503) == 20 - int(-(-bound // 1)) and app[keys.SERVING].limit.in_flight == 0
