"""What each spigo package does with a get or a put.

A package answers with a `Reply` and never raises for a dependency's failure:
the failure becomes a 502/504 reply. Routing (which dependency, which zone)
and ring decisions come from `policy`; the calls themselves from `client`.

| package | get / put |
|---|---|
| denominator, elb, zuul, karyon, monolith | forward to one dependency instance, chosen at random over the instances of all dependencies (`behavior.fanout: all`: call every dependency) |
| elb, monolith, denominator | spread over every zone; zuul, karyon prefer their own zone |
| staash | get: tiers cache → volume → priamCassandra → store → staash, a miss falls through; put: one instance of every tier |
| store, cache, volume | key-value with a hit rate; a put copies to the other instances when the service depends on itself, and to one instance of every other dependency (a copy, `POST /replicate`) |
| priamCassandra, riak | a token ring per zone; the owner stores, copies to the owner in each other zone and, through eureka, each other region, and to one instance of every other dependency |
| copies (`POST /replicate`) | store, cache, volume, ring: stored; staash: passed on to one instance of every tier; elb, zuul, karyon, monolith: passed on as a put would be routed; a copy is never copied on by write-through, so copies end |
| eureka | answers lookups with what it knows; GET /registry lists it |
| pirate | a put is a chat tick: name-drop one buddy to another, or give a random share of the purse to a buddy; a get tells the purse |
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from simiankube.contract import Dependency, NanoserviceConfig
from simiankube.nanoservice.client import Caller, Result
from simiankube.nanoservice.hop import Hop
from simiankube.nanoservice.policy import Endpoint, ring_owner, tier_order, zone_rings

MAX_KEYS = 100_000  # a store forgets its oldest keys beyond either bound: memory stays bounded
MAX_BYTES = 64 * 1024 * 1024  # memory of the keys and values held (sys.getsizeof), per instance
SEEDED_KEY = "why"  # every data package starts with spigo's "why?" = "because..."
SEEDED_VALUE = "because..."
PIRATE_PURSE = 100
DUNBAR = 10  # spigo's pirates remember at most this many buddies


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

    async def replicate(self, hop: Hop, key: str, value: str, spread: bool) -> Reply:
        """Store a copy here only; with `spread` (a copy from another region) also copy it on to the other
        zones of this region."""
        return Reply(404, {"error": f"package {self.config.package} keeps no data to replicate into"})

    async def coins(self, hop: Hop, amount: int) -> Reply:
        return Reply(404, {"error": f"package {self.config.package} keeps no coins"})

    async def namedrop(self, hop: Hop, instance: str) -> Reply:
        return Reply(404, {"error": f"package {self.config.package} keeps no buddies"})

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

    prefer_zone = False  # own zone first, other zones as the fallback

    async def _send(self, hop: Hop, dep: Dependency, method: str, key: str, value: str | None) -> Result:
        body = None if value is None else {"value": value}
        return await self.ctx.caller.call_dependency(hop, dep, method, f"/kv/{key}", body=body,
                                                     prefer_zone=self.prefer_zone)

    async def _route(self, hop: Hop, method: str, key: str, value: str | None) -> Reply:
        deps = self.config.dependencies
        if not deps:
            return miss(key) if method == "GET" else Reply(200, {"key": key, "stored": False})
        if self.config.behavior.fanout == "all":
            chosen = list(deps)
        else:
            chosen = [self.ctx.caller.choose_dependency(deps, prefer_zone=self.prefer_zone)]
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

    async def replicate(self, hop: Hop, key: str, value: str, spread: bool) -> Reply:
        """A copy (from a data package that depends on this router) goes where a put would."""
        deps = self.config.dependencies
        if not deps:
            return await super().replicate(hop, key, value, spread)
        chosen = list(deps) if self.config.behavior.fanout == "all" else [
            self.ctx.caller.choose_dependency(deps, prefer_zone=self.prefer_zone)]
        return await pass_copies(self.ctx.caller, hop, chosen, key, value, prefer_zone=self.prefer_zone)


async def pass_copies(caller: Caller, hop: Hop, deps: list[Dependency], key: str, value: str, *,
                      prefer_zone: bool = True) -> Reply:
    """Send a copy (`POST /replicate`) to one instance of each of `deps` and wait: a package that keeps no
    data itself passes a copy on, so a copy ends at a data package (whose copies are never passed on)."""
    results = await asyncio.gather(*(
        caller.call_dependency(hop, dep, "POST", "/replicate", body={"key": key, "value": value},
                               prefer_zone=prefer_zone)
        for dep in deps
    ))
    broken = [r for r in results if not r.ok]
    if broken:
        return failed(broken[0])
    return Reply(200, {"key": key, "stored": True, "via": [d.service for d in deps]})


class Elb(Router):
    """Spreads across every zone of its region."""


class Zuul(Router):
    prefer_zone = True


class Karyon(Router):
    prefer_zone = True


class Monolith(Router):
    """Like karyon, over every zone."""


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
        """One instance of each tier (a tier's dependencies share one instance-weighted choice, as spigo's
        per-package routers do); volumes get the key in this instance's namespace, as spigo's staash writes
        `instance/key` to its volumes (here `instance:key`: a slash cannot be part of a key in a URL path)."""
        chosen = self._one_per_tier()
        results = await asyncio.gather(*(
            self.ctx.caller.call_dependency(
                hop, dep, "PUT", f"/kv/{self.ctx.instance}:{key}" if dep.package == "volume" else f"/kv/{key}",
                body={"value": value})
            for dep in chosen
        ))
        broken = [r for r in results if not r.ok]
        if broken:
            return failed(broken[0])
        return Reply(200, {"key": key, "stored": True, "tiers": [d.service for d in chosen]})

    async def replicate(self, hop: Hop, key: str, value: str, spread: bool) -> Reply:
        """A copy from a data package that depends on this staash goes on, as a copy, to one instance of
        every tier (its key unchanged: it already names its writer)."""
        if not self.config.dependencies:
            return await super().replicate(hop, key, value, spread)
        return await pass_copies(self.ctx.caller, hop, self._one_per_tier(), key, value)

    def _one_per_tier(self) -> list[Dependency]:
        tiers: dict[str, list[Dependency]] = {}
        for dep in self.config.dependencies:
            tiers.setdefault(dep.package, []).append(dep)
        return [self.ctx.caller.choose_dependency(deps, prefer_zone=True) for deps in tiers.values()]


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
    """store, cache, volume: seeded with spigo's "why?" key; a get of a stored key hits with
    `behavior.hit_rate`, else answers a miss (the caller pays for the slower path behind)."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.data = Bounded()
        self.data.put(SEEDED_KEY, SEEDED_VALUE)
        self.replicating: set[asyncio.Task[None]] = set()  # fire-and-forget copies in flight

    @property
    def self_dependent(self) -> bool:
        return any(d.service == self.config.service for d in self.config.dependencies)

    def found(self, key: str) -> Reply:
        value = self.data.get(key)
        hit_rate = self.config.behavior.hit_rate
        if value is None or (hit_rate < 1.0 and self.ctx.rng.random() >= hit_rate):
            return miss(key)
        return Reply(200, {"key": key, "value": value, "found": True, "served_by": self.ctx.instance})

    async def get(self, hop: Hop, key: str, direct: bool) -> Reply:
        return self.found(key)

    async def replicate(self, hop: Hop, key: str, value: str, spread: bool) -> Reply:
        self.data.put(key, value)
        return Reply(200, {"key": key, "stored": True, "served_by": self.ctx.instance})

    async def put(self, hop: Hop, key: str, value: str, direct: bool) -> Reply:
        self.data.put(key, value)
        copies = self.copy_to_other_dependencies(hop, key, value)
        if self.self_dependent:
            others = [p for p in self.config.peers if p.name != self.ctx.instance]
            copies += self.replicate_to(hop, [[e] for e in self.ctx.caller.instance_endpoints(others, self.config.port)],
                                        key, value)
        return Reply(200, {"key": key, "stored": True, "replicating": copies, "served_by": self.ctx.instance})

    def copy_to_other_dependencies(self, hop: Hop, key: str, value: str) -> int:
        """spigo's store copies a put to its dependencies of its own package only, so an edge to another
        service would never carry a call: here a put is copied to one instance of every dependency other
        than the service itself, without waiting, as its other copies. Returns the number sent."""
        deps = [d for d in self.config.dependencies if d.service != self.config.service]
        if not deps:
            return 0
        own = Hop(time.monotonic() + self.ctx.caller.timeout, hop.hops, hop.max_hops, hop.trace)

        async def copy(dep: Dependency) -> None:
            result = await self.ctx.caller.call_dependency(own, dep, "POST", "/replicate",
                                                           body={"key": key, "value": value})
            if not result.ok:
                self.ctx.caller.metrics.replication(dep.service).errors += 1

        for dep in deps:
            self._detach(copy(dep))
        return len(deps)

    def _detach(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a copy without waiting for it; it is held until done (cancelled with the process)."""
        task = asyncio.create_task(work)
        self.replicating.add(task)
        task.add_done_callback(self.replicating.discard)

    def replicate_to(self, hop: Hop, groups: list[list[Endpoint]], key: str, value: str, *,
                     spread: bool = False) -> int:
        """Send a copy to each group (one instance per group, ordered fallback inside it) without waiting, as
        spigo's Replicate does: a put's latency never includes its copies. Each copy gets a budget of its own
        (`behavior.timeout_ms`); a copy that fails is counted in simiankube_replication_failures_total.
        Returns the number of copies sent."""
        groups = [g for g in groups if g]
        if not groups:
            return 0
        own = Hop(time.monotonic() + self.ctx.caller.timeout, hop.hops, hop.max_hops, hop.trace)
        path = "/replicate?spread=1" if spread else "/replicate"
        failures = self.ctx.caller.metrics.replication(self.config.service)

        async def copy(group: list[Endpoint]) -> None:
            result = await self.ctx.caller.call(own, self.config.service, [group], "POST", path,
                                                body={"key": key, "value": value}, ordered=True)
            if not result.ok:
                failures.errors += 1

        for group in groups:
            self._detach(copy(group))
        return len(groups)


class Ring(KeyValue):
    """priamCassandra, riak: one token ring per zone over this region's instances (spigo's Distribute: evenly
    spaced tokens), so every zone holds a copy and reads stay in the zone. A write is stored by the key's owner
    in the receiving zone, which copies it to the owner in each other zone and, through eureka, to one owner in
    each other region; that one copies it on to the other zones of its region (spigo's Replicate)."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        # The ring's members never change while the process runs: look them up once, not per request.
        self._by_name = {p.name: p for p in self.config.peers}
        self._rings = zone_rings((p.name, p.zone) for p in self.config.peers)
        me = self._by_name.get(ctx.instance)
        self._zone = me.zone if me else next(iter(self._rings), "")

    @property
    def calls_out(self) -> bool:
        return super().calls_out or len(self.config.peers) > 1  # forwards to owners, replicates to ring nodes

    def _owner(self, zone: str, key: str) -> str | None:
        ring = self._rings.get(zone)
        return ring_owner(ring, key) if ring else None

    def _other_zone_owners(self, key: str) -> list[str]:
        return [ring_owner(ring, key) for zone, ring in self._rings.items() if zone != self._zone]

    def _endpoints(self, names: list[str]) -> list[Endpoint]:
        by_name = self._by_name
        return self.ctx.caller.instance_endpoints([by_name[n] for n in names], self.config.port)

    async def _forward(self, hop: Hop, method: str, key: str, value: str | None) -> Reply:
        """A non-owner sends to its zone's owner; the one retry goes to the owner in another zone."""
        owner = self._owner(self._zone, key)
        candidates = [owner, *self._other_zone_owners(key)] if owner else self._other_zone_owners(key)
        body = None if value is None else {"value": value}
        result = await self.ctx.caller.call(hop, self.config.service, [self._endpoints(candidates)], method,
                                            f"/kv/{key}?direct=1", body=body, ordered=True)
        if result.status in (200, 404):
            return Reply(result.status, result.body)
        return failed(result)

    def _owns(self, key: str) -> bool:
        owner = self._owner(self._zone, key)
        return owner is None or owner == self.ctx.instance

    async def get(self, hop: Hop, key: str, direct: bool) -> Reply:
        if direct or self._owns(key):
            return self.found(key)
        return await self._forward(hop, "GET", key, None)

    async def put(self, hop: Hop, key: str, value: str, direct: bool) -> Reply:
        if not (direct or self._owns(key)):
            return await self._forward(hop, "PUT", key, value)
        self.data.put(key, value)
        copies = self._copy_to_zones(hop, key, value) + self.copy_to_other_dependencies(hop, key, value)
        if self.config.registry:
            copies += self.replicate_to(hop, self._other_region_owners(key), key, value, spread=True)
        return Reply(200, {"key": key, "stored": True, "replicating": copies, "served_by": self.ctx.instance})

    async def replicate(self, hop: Hop, key: str, value: str, spread: bool) -> Reply:
        self.data.put(key, value)
        copies = self._copy_to_zones(hop, key, value) if spread else 0
        return Reply(200, {"key": key, "stored": True, "replicating": copies, "served_by": self.ctx.instance})

    def _copy_to_zones(self, hop: Hop, key: str, value: str) -> int:
        return self.replicate_to(hop, [self._endpoints([n]) for n in self._other_zone_owners(key)], key, value)

    def _other_region_owners(self, key: str) -> list[list[Endpoint]]:
        """Per other region (its self-dependency lists every region): the key's owner in the zone of the
        same name as this one's, then the owners in that region's other zones as the fallback."""
        groups = []
        for dep in self.config.dependencies:
            if dep.service != self.config.service:
                continue
            for target in dep.targets:
                if target.region == self.config.region or not target.instances:
                    continue
                by_name = {i.name: i for i in target.instances}
                rings = zone_rings((i.name, i.zone) for i in target.instances)
                zones = sorted(rings, key=lambda z: z != self._zone)
                owners = [by_name[ring_owner(rings[z], key)] for z in zones]
                groups.append(self.ctx.caller.instance_endpoints(owners, target.port))
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
    """spigo's fsm actors: a put is one tick of a pirate's chat. Half the ticks name-drop (tell one buddy about
    another), half donate a random share of the purse (0 .. purse-1 coins, none when the draw is 0) to a random
    buddy. Buddies are the instances of the dependencies, never this one, at most DUNBAR of them; a name-drop
    adds a buddy the receiver can reach (one of its dependencies' instances)."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.purse = PIRATE_PURSE
        self.buddies: dict[str, tuple[str, Endpoint]] = {}  # instance → (service, endpoint)
        self._met = False

    def _reachable(self) -> dict[str, tuple[str, Endpoint]]:
        """Every dependency instance except this one (by name, or by address where names are unknown)."""
        found: dict[str, tuple[str, Endpoint]] = {}
        for dep in self.config.dependencies:
            preferred, fallback = self.ctx.caller.dependency_endpoints(dep)
            for e in [*preferred, *fallback]:
                if e.instance != self.ctx.instance and e.address != self.ctx.caller.address:
                    found[e.instance or e.key] = (dep.service, e)
        return found

    def _meet(self) -> None:
        """The first buddies: up to DUNBAR of the reachable instances, at random (resolved on first use)."""
        if self._met:
            return
        reachable = self._reachable()
        if reachable:
            self._met = True
            for name in self.ctx.rng.sample(sorted(reachable), min(DUNBAR, len(reachable))):
                self.buddies[name] = reachable[name]

    async def get(self, hop: Hop, key: str, direct: bool) -> Reply:
        return Reply(200, {"key": key, "found": True, "coins": self.purse, "buddies": sorted(self.buddies)})

    async def put(self, hop: Hop, key: str, value: str, direct: bool) -> Reply:
        self._meet()
        rng, names = self.ctx.rng, sorted(self.buddies)
        if rng.random() < 0.5:
            if len(names) < 2:
                return Reply(200, {"namedropped": None, "coins": self.purse})
            first, last = rng.sample(names, 2)
            result = await self._send(hop, last, "/namedrop", {"instance": first})
            return failed(result) if not result.ok else Reply(200, {"namedropped": first, "to": last})
        donation = rng.randrange(self.purse) if self.purse > 0 else 0
        if donation == 0 or not names:
            return Reply(200, {"given": 0, "coins": self.purse})
        buddy = rng.choice(names)
        self.purse -= donation  # held while in flight, so concurrent gifts never overdraw
        result = await self._send(hop, buddy, "/coins", {"coins": donation})
        if not result.ok:
            self.purse += donation
            return failed(result)
        return Reply(200, {"given": donation, "to": buddy, "coins": self.purse})

    async def _send(self, hop: Hop, buddy: str, path: str, body: dict[str, Any]) -> Result:
        service, endpoint = self.buddies[buddy]
        return await self.ctx.caller.call(hop, service, [[endpoint]], "POST", path, body=body, ordered=True)

    async def coins(self, hop: Hop, amount: int) -> Reply:
        self.purse += amount
        return Reply(200, {"coins": self.purse})

    async def namedrop(self, hop: Hop, instance: str) -> Reply:
        self._meet()
        reachable = self._reachable()
        added = instance in reachable and instance not in self.buddies and len(self.buddies) < DUNBAR
        if added:
            self.buddies[instance] = reachable[instance]
        return Reply(200, {"added": added, "buddies": len(self.buddies)})


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
