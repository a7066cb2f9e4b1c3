"""What each spigo package does with a get or a put.

A package answers with a `Reply` and never raises for a dependency's failure:
the failure becomes a 502/504 reply. Routing (which dependency, which zone)
and ring decisions come from `policy`; the calls themselves from `client`.

| package | get / put |
|---|---|
| denominator, elb, zuul | forward to one dependency, chosen at random |
| karyon, monolith | call every dependency |
| elb, monolith, denominator | spread over every zone; zuul, karyon prefer their own zone |
| staash | get: tiers cache → volume → priamCassandra → store → staash, a miss falls through; put: every tier |
| store, cache, volume | key-value; a put replicates to the other instances when the service depends on itself |
| priamCassandra, riak | token ring; the owner stores, replicates to one node per other zone and, through eureka, per other region |
| eureka | answers lookups with what it knows; GET /registry lists it |
| pirate | a put gives one coin to a random buddy; a get tells the purse |
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from simiankube.contract import Dependency, NanoserviceConfig
from simiankube.nanoservice.client import Caller, Result
from simiankube.nanoservice.hop import Hop
from simiankube.nanoservice.policy import ring_order, replica_per_zone, tier_order

MAX_KEYS = 100_000  # a store forgets its oldest keys beyond either bound: memory stays bounded
MAX_BYTES = 64 * 1024 * 1024  # memory of the keys and values held (sys.getsizeof), per instance
PIRATE_PURSE = 100


@dataclass(slots=True)
class Reply:
    status: int
    body: dict[str, Any]


def miss(key: str) -> Reply:
    return Reply(404, {"key": key, "found": False})


def failed(result: Result) -> Reply:
    """A dependency's failure as this service's answer: a 4xx (the request was refused, nothing was stored) and
    the budget/loop codes pass through, the rest is 502."""
    status = result.status if result.status in (504, 508) or 400 <= result.status < 500 else 502
    return Reply(status, {"error": result.error or str(result.body.get("error", f"dependency answered {status}"))})


@dataclass
class Context:
    config: NanoserviceConfig
    instance: str
    caller: Caller
    rng: random.Random


class Package:
    """Base behaviour: a leaf that knows nothing (subclasses override what they do)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.config = ctx.config

    @property
    def calls_out(self) -> bool:
        """Whether an operation may call another instance — the only thing a package ever waits for.
        When it may not, an operation completes without suspending and needs no budget timer."""
        return bool(self.config.dependencies)

    async def get(self, hop: Hop, key: str, direct: bool) -> Reply:
        return miss(key)

    async def put(self, hop: Hop, key: str, value: str, direct: bool) -> Reply:
        return Reply(200, {"key": key, "stored": False})

    async def replicate(self, hop: Hop, key: str, value: str) -> Reply:
        return Reply(404, {"error": f"package {self.config.package} keeps no data to replicate into"})

    async def coins(self, hop: Hop, amount: int) -> Reply:
        return Reply(404, {"error": f"package {self.config.package} keeps no coins"})

    def view(self) -> dict[str, Any]:
        """GET /registry: the instances this one knows of each dependency (eureka serves this as its registry)."""
        caller = self.ctx.caller
        ejected = caller.health.ejected()
        services: dict[str, Any] = {}
        for dep in self.config.dependencies:
            preferred, fallback = caller.dependency_endpoints(dep)
            services[dep.service] = [
                {"instance": e.instance, "address": e.address, "port": e.port, "zone": e.zone, "region": e.region,
                 "up": e.key not in ejected}
                for e in [*preferred, *fallback]
            ]
        return {"registry": self.ctx.instance, "region": self.config.region, "services": services}


class Router(Package):
    """denominator, elb, zuul, karyon, monolith: pass requests on to dependencies."""

    fan_out = False  # call every dependency, not one at random
    prefer_zone = False  # own zone first, other zones as the fallback

    async def _send(self, hop: Hop, dep: Dependency, method: str, key: str, value: str | None) -> Result:
        body = None if value is None else {"value": value}
        return await self.ctx.caller.call_dependency(hop, dep, method, f"/kv/{key}", body=body,
                                                     prefer_zone=self.prefer_zone)

    async def _route(self, hop: Hop, method: str, key: str, value: str | None) -> Reply:
        deps = self.config.dependencies
        if not deps:
            return miss(key) if method == "GET" else Reply(200, {"key": key, "stored": False})
        chosen = list(deps) if self.fan_out else [self.ctx.rng.choice(deps)]
        results = await asyncio.gather(*(self._send(hop, d, method, key, value) for d in chosen))
        broken = [r for r in results if r.status >= 400 and not (method == "GET" and r.status == 404)]
        if broken:
            return failed(broken[0])
        found = [r for r in results if r.status == 200]
        if method == "GET" and not found:
            return miss(key)
        return Reply(200, {"key": key, **(found[0].body if found else {}),
                           "via": [d.service for d in chosen]})

    async def get(self, hop: Hop, key: str, direct: bool) -> Reply:
        return await self._route(hop, "GET", key, None)

    async def put(self, hop: Hop, key: str, value: str, direct: bool) -> Reply:
        return await self._route(hop, "PUT", key, value)


class Elb(Router):
    """Spreads across every zone of its region."""


class Zuul(Router):
    prefer_zone = True


class Karyon(Router):
    fan_out = True
    prefer_zone = True


class Monolith(Router):
    fan_out = True


class Denominator(Router):
    """The traffic source; requests sent to it directly are routed like an elb's."""


class Staash(Package):
    async def get(self, hop: Hop, key: str, direct: bool) -> Reply:
        failures: list[Result] = []
        for tried, dep in enumerate(tier_order(self.config.dependencies)):
            result = await self.ctx.caller.call_dependency(hop, dep, "GET", f"/kv/{key}")
            if result.status == 200:
                return Reply(200, {**result.body, "tier": dep.service, "misses": tried})
            if result.status != 404:
                failures.append(result)
            if hop.remaining() <= 0:
                break
        if failures and len(failures) == len(self.config.dependencies):
            return failed(failures[0])
        return miss(key)

    async def put(self, hop: Hop, key: str, value: str, direct: bool) -> Reply:
        results = await asyncio.gather(*(
            self.ctx.caller.call_dependency(hop, dep, "PUT", f"/kv/{key}", body={"value": value})
            for dep in self.config.dependencies
        ))
        broken = [r for r in results if not r.ok]
        if broken:
            return failed(broken[0])
        return Reply(200, {"key": key, "stored": True, "tiers": [d.service for d in self.config.dependencies]})


@dataclass
class Bounded:
    """Key-value data bounded in keys and in bytes (oldest written key goes first)."""

    limit: int = MAX_KEYS
    max_bytes: int = MAX_BYTES
    data: OrderedDict[str, str] = field(default_factory=OrderedDict)
    size: int = 0  # bytes held: sys.getsizeof of every key and value

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def put(self, key: str, value: str) -> None:
        old = self.data.get(key)
        if old is not None:
            self.size -= sys.getsizeof(key) + sys.getsizeof(old)
        self.data[key] = value
        self.data.move_to_end(key)
        self.size += sys.getsizeof(key) + sys.getsizeof(value)
        while len(self.data) > self.limit or (self.size > self.max_bytes and len(self.data) > 1):
            gone, dropped = self.data.popitem(last=False)
            self.size -= sys.getsizeof(gone) + sys.getsizeof(dropped)


class KeyValue(Package):
    """store, cache, volume."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.data = Bounded()

    @property
    def self_dependent(self) -> bool:
        return any(d.service == self.config.service for d in self.config.dependencies)

    def found(self, key: str) -> Reply:
        value = self.data.get(key)
        if value is None:
            return miss(key)
        return Reply(200, {"key": key, "value": value, "found": True, "served_by": self.ctx.instance})

    async def get(self, hop: Hop, key: str, direct: bool) -> Reply:
        return self.found(key)

    async def replicate(self, hop: Hop, key: str, value: str) -> Reply:
        self.data.put(key, value)
        return Reply(200, {"key": key, "stored": True, "served_by": self.ctx.instance})

    async def put(self, hop: Hop, key: str, value: str, direct: bool) -> Reply:
        self.data.put(key, value)
        replicas = 0
        if self.self_dependent:
            others = [p for p in self.config.peers if p.name != self.ctx.instance]
            replicas = await self._replicate_to(hop, [[e] for e in self.ctx.caller.instance_endpoints(others, self.config.port)], key, value)
        return Reply(200, {"key": key, "stored": True, "replicas": replicas, "served_by": self.ctx.instance})

    async def _replicate_to(self, hop: Hop, groups: list[list[Any]], key: str, value: str) -> int:
        """Replicate to each group (one instance per group, ordered fallback inside it); count successes."""
        calls: list[Awaitable[Result]] = [
            self.ctx.caller.call(hop, self.config.service, [group], "POST", "/replicate",
                                 body={"key": key, "value": value}, ordered=True)
            for group in groups if group
        ]
        results = await asyncio.gather(*calls)
        return sum(1 for r in results if r.ok)


class Ring(KeyValue):
    """priamCassandra, riak: a token ring over the stable names of this region's instances."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        # The ring's members never change while the process runs: look them up once, not per request.
        self._names = [p.name for p in self.config.peers]
        self._by_name = {p.name: p for p in self.config.peers}
        self._zones = {p.name: p.zone for p in self.config.peers}

    @property
    def calls_out(self) -> bool:
        return super().calls_out or len(self.config.peers) > 1  # forwards to owners, replicates to ring nodes

    def _order(self, key: str) -> list[str]:
        return ring_order(self._names, key)

    def _endpoints(self, names: list[str]) -> list[Any]:
        by_name = self._by_name
        return self.ctx.caller.instance_endpoints([by_name[n] for n in names], self.config.port)

    async def _forward(self, hop: Hop, method: str, key: str, value: str | None) -> Reply:
        """A non-owner sends to the owner; the one retry goes to the next replica in ring order."""
        order = self._order(key)
        owner = order[0]
        candidates = [owner, *replica_per_zone(order, self._zones, owner)]
        body = None if value is None else {"value": value}
        result = await self.ctx.caller.call(hop, self.config.service, [self._endpoints(candidates)], method,
                                            f"/kv/{key}?direct=1", body=body, ordered=True)
        if result.status in (200, 404):
            return Reply(result.status, result.body)
        return failed(result)

    def _owns(self, key: str) -> bool:
        order = self._order(key)
        return not order or order[0] == self.ctx.instance

    async def get(self, hop: Hop, key: str, direct: bool) -> Reply:
        if direct or self._owns(key):
            return self.found(key)
        return await self._forward(hop, "GET", key, None)

    async def put(self, hop: Hop, key: str, value: str, direct: bool) -> Reply:
        if not (direct or self._owns(key)):
            return await self._forward(hop, "PUT", key, value)
        self.data.put(key, value)
        groups = [self._endpoints([name])
                  for name in replica_per_zone(self._order(key), self._zones, self.ctx.instance)]
        if self.config.registry:
            groups += self._other_region_owners(key)
        replicas = await self._replicate_to(hop, groups, key, value)
        return Reply(200, {"key": key, "stored": True, "replicas": replicas, "served_by": self.ctx.instance})

    def _other_region_owners(self, key: str) -> list[list[Any]]:
        """The owner of the key in each other region's ring (its self-dependency lists every region)."""
        groups = []
        for dep in self.config.dependencies:
            if dep.service != self.config.service:
                continue
            for target in dep.targets:
                if target.region == self.config.region or not target.instances:
                    continue
                order = ring_order([i.name for i in target.instances], key)
                by_name = {i.name: i for i in target.instances}
                groups.append(self.ctx.caller.instance_endpoints([by_name[n] for n in order], target.port))
        return groups


class Eureka(Package):
    """The registry, on top of Kubernetes DNS/Endpoints: it serves what it resolves.

    Lookups (GET /kv/{service}) answer with the endpoints of a known service;
    registrations (PUT) are accepted and acknowledged (Kubernetes registers
    pods; the heartbeat is what remains of eureka's protocol).
    """

    async def get(self, hop: Hop, key: str, direct: bool) -> Reply:
        services = self.view()["services"]
        if key in services:
            return Reply(200, {"key": key, "found": True, "instances": services[key]})
        return miss(key)

    async def put(self, hop: Hop, key: str, value: str, direct: bool) -> Reply:
        return Reply(200, {"key": key, "registered": True})


class Pirate(Package):
    """spigo's fsm actors: buddies (its dependencies) exchange gold coins."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.purse = PIRATE_PURSE

    async def get(self, hop: Hop, key: str, direct: bool) -> Reply:
        return Reply(200, {"key": key, "found": True, "coins": self.purse})

    async def put(self, hop: Hop, key: str, value: str, direct: bool) -> Reply:
        if not self.config.dependencies or self.purse <= 0:
            return Reply(200, {"given": 0, "coins": self.purse})
        buddy = self.ctx.rng.choice(self.config.dependencies)
        self.purse -= 1  # held while in flight, so concurrent gifts never overdraw
        result = await self.ctx.caller.call_dependency(hop, buddy, "POST", "/coins", body={"coins": 1})
        if not result.ok:
            self.purse += 1
            return failed(result)
        return Reply(200, {"given": 1, "to": buddy.service, "coins": self.purse})

    async def coins(self, hop: Hop, amount: int) -> Reply:
        self.purse += amount
        return Reply(200, {"coins": self.purse})


PACKAGES: dict[str, type[Package]] = {
    "denominator": Denominator,
    "elb": Elb,
    "zuul": Zuul,
    "karyon": Karyon,
    "monolith": Monolith,
    "staash": Staash,
    "store": KeyValue,
    "cache": KeyValue,
    "volume": KeyValue,
    "priamCassandra": Ring,
    "riak": Ring,
    "eureka": Eureka,
    "pirate": Pirate,
}


def build_package(ctx: Context) -> Package:
    try:
        kind = PACKAGES[ctx.config.package]
    except KeyError:
        raise ValueError(f"unknown package {ctx.config.package!r} (known: {', '.join(PACKAGES)})") from None
    return kind(ctx)
