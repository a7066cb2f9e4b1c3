"""Calls to dependencies: budgets, one retry, outlier ejection, metrics, spans.

The rules that keep a failure from multiplying through the graph:
- each attempt's timeout is min(behavior.timeout_ms, remaining budget), and
  the callee is handed slightly less, so a slow callee answers 504 itself
  before its caller gives up — and a 504 is never retried;
- at most one retry, only against a different instance, only while budget
  remains, only within the caller's retry budget (retries add at most 20 %
  to the calls, after a reserve of 10), and only when the first attempt did
  not reach a working service (refused, reset, hung, a 503 from a draining
  or overloaded instance) — a 500 or 502 is an answer, not a reason to try
  again;
- an instance that refused connections (or timed out three times running) is
  ejected for a while, doubling on repeats, so a dead instance is not tried
  again until its ejection timer lets the next request probe it. Timeouts
  are also what overload looks like, so instances ejected only for timeouts
  are still used when nothing else is left (a refused connection is proof
  of death; a slow answer is not).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from simiankube.contract import Dependency, Instance, NanoserviceConfig
from simiankube.nanoservice.hop import Hop
from simiankube.nanoservice.metrics import Metrics
from simiankube.nanoservice.pool import Pool, authority, request_head
from simiankube.nanoservice.policy import (Endpoint, choose_endpoint, choose_weighted, instance_weights,
                                            region_targets)
from simiankube.nanoservice.resolver import Resolver
from simiankube.nanoservice.tracing import SpanExporter, span_name, wall_time, zipkin_span

RETRYABLE_STATUS = frozenset({503})
SOFT_FAILURES_TO_EJECT = 3
MIN_ATTEMPT_SECONDS = 0.001  # no attempt is worth starting with less budget
# A call that timed out (or whose caller gave up) still reads its answer for this long, so the connection goes
# back to the pool: closing it would cost a new connection, and under load every timeout would add one.
LATE_ANSWER_SECONDS = 1.0
NOTHING: frozenset[str] = frozenset()


@dataclass
class Result:
    """What a call produced: a response, or a synthesized 502/504 when none came."""

    status: int
    body: dict[str, Any]
    endpoint: Endpoint | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class Health:
    """Outlier ejection keyed by endpoint (address:port)."""

    base_seconds: float = 1.0
    max_seconds: float = 10.0
    until: dict[str, float] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)  # ejected for a refused connection, not for slowness
    strikes: dict[str, int] = field(default_factory=dict)  # soft failures in a row
    ejections: dict[str, int] = field(default_factory=dict)  # ejections since the last success

    def ejected(self, *, dead_only: bool = False) -> set[str] | frozenset[str]:
        """The ejected endpoint keys (a snapshot the caller must not modify)."""
        if not self.until:
            return NOTHING  # the usual case: no copies, no clock
        now = time.monotonic()
        for key in [k for k, t in self.until.items() if t <= now]:
            del self.until[key]  # the timer ran out: the next request probes it
            self.dead.discard(key)
        return set(self.dead) if dead_only else set(self.until)

    def failure(self, key: str, *, hard: bool) -> None:
        strikes = self.strikes.get(key, 0) + 1
        self.strikes[key] = strikes
        if hard or strikes >= SOFT_FAILURES_TO_EJECT:
            count = self.ejections.get(key, 0) + 1
            self.ejections[key] = count
            # the exponent stops growing once max_seconds is reached: an instance that keeps timing out under
            # overload is ejected over a thousand times, and 2 ** 1024 is no float (OverflowError)
            self.until[key] = time.monotonic() + min(self.max_seconds, self.base_seconds * 2.0 ** min(count - 1, 64))
            self.strikes[key] = 0
            if hard:
                self.dead.add(key)

    def success(self, key: str) -> None:
        if key in self.strikes or key in self.ejections:
            self.strikes.pop(key, None)
            self.ejections.pop(key, None)


@dataclass(slots=True)
class RetryBudget:
    """Retries add at most `ratio` to the calls (Finagle's retry budget, counted in calls instead of time):
    every call earns `ratio` of a retry, a retry spends one, and at most `reserve` are saved up. When a
    dependency sheds load (503) or fails wholesale, its callers do not double the load it sheds."""

    ratio: float = 0.2
    reserve: float = 10.0
    balance: float = 10.0

    def earn(self) -> None:
        self.balance = min(self.reserve, self.balance + self.ratio)

    def spend(self) -> bool:
        if self.balance < 1.0:
            return False
        self.balance -= 1.0
        return True


@dataclass(frozen=True, slots=True)
class _Resolved:
    dep: Dependency
    version: int  # the resolver's version the endpoints were built from
    endpoints: tuple[list[Endpoint], list[Endpoint]]


@dataclass(frozen=True, slots=True)
class _Weights:
    deps: tuple[Dependency, ...]  # held so that their ids, the cache's key, are not reused
    version: int  # the resolver's version the weights were counted from
    weights: list[int]


def new_pool(keepalive: float) -> Pool:
    """The keep-alive pool for calls to other instances (see `Pool`): one per pod, one per local worker process
    (a pool per instance opened a connection for nearly every call of a thousand instances). An idle
    connection is let go at half a callee's keep-alive timeout (the same as ours)."""
    return Pool(idle_seconds=keepalive / 2, late_seconds=LATE_ANSWER_SECONDS)


def new_session() -> aiohttp.ClientSession:
    """An instance's aiohttp session, for what is not a call to another instance (span export). No cookie jar:
    nanoservices set no cookies, and filtering an empty jar is paid on every request."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent",))


def handed_budget(timeout: float) -> float:
    """The callee gets a little less than the caller waits, so the callee's 504 arrives first."""
    return timeout - min(0.005, timeout * 0.1)


class Caller:
    """One per nanoservice: every outgoing call goes through here."""

    def __init__(
        self,
        *,
        config: NanoserviceConfig,
        zone: str,
        address: str,
        pool: Pool,
        resolver: Resolver,
        metrics: Metrics,
        exporter: SpanExporter,
        rng: random.Random,
        health: Health | None = None,
        retry_budget: RetryBudget | None = None,
    ) -> None:
        self.config = config
        self.zone = zone
        self.address = address
        self.pool = pool
        self.resolver = resolver
        self.metrics = metrics
        self.exporter = exporter
        self.rng = rng
        self.health = health or Health()
        self.retry_budget = retry_budget or RetryBudget()
        self.timeout = config.behavior.timeout_ms / 1000.0
        # id(dependency) → (dependency, the resolver's version, (preferred, fallback))
        self._endpoints: dict[int, _Resolved] = {}
        # (ids of the dependencies, prefer_zone) → their instance weights while nothing is ejected
        self._weights: dict[tuple[tuple[int, ...], bool], _Weights] = {}

    # -- where to send ---------------------------------------------------------

    def dependency_endpoints(self, dep: Dependency) -> tuple[list[Endpoint], list[Endpoint]]:
        """(preferred, fallback): own region's instances, then other regions through the registry.

        Built again only when one of the resolver's answers changed (the lists are shared: callers must not
        modify them)."""
        cached = self._endpoints.get(id(dep))
        version = self.resolver.version
        if cached is not None and cached.dep is dep and cached.version == version:
            return cached.endpoints
        preferred, fallback = region_targets(dep, self.config.region, self.config.registry)
        built = self._build_endpoints(preferred, fallback)
        self._endpoints[id(dep)] = _Resolved(dep, version, built)
        return built

    def _build_endpoints(
        self, preferred: Sequence[Any], fallback: Sequence[Any]
    ) -> tuple[list[Endpoint], list[Endpoint]]:
        def endpoints(targets: Sequence[Any]) -> list[Endpoint]:
            return [
                Endpoint(e.address, e.port, e.zone, e.instance, t.region)
                for t in targets
                for e in self.resolver.cached(t.peers_host, t.port)
            ]

        return endpoints(preferred), endpoints(fallback)

    def instance_endpoints(self, instances: Sequence[Instance], port: int) -> list[Endpoint]:
        """Named instances (ring members, replicas), in the order given."""
        found = []
        for instance in instances:
            for e in self.resolver.cached(instance.host, port):
                found.append(Endpoint(e.address, e.port, instance.zone, instance.name))
        return found

    def choose_dependency(self, deps: Sequence[Dependency], *, prefer_zone: bool) -> Dependency:
        """One dependency, weighted by its instances (own region's, else the fallback regions'), so a
        request lands on any dependency instance with equal chance, as spigo's router.Random() does."""
        if len(deps) == 1:
            return deps[0]
        ejected = self.health.ejected()
        if ejected:
            weights = self._instance_weights(deps, prefer_zone, ejected)
        else:
            # Nothing ejected (the usual case): the weights change only with the resolver's answers. A router of
            # a wide architecture otherwise walked every instance of every dependency on every request.
            key = (tuple(map(id, deps)), prefer_zone)
            cached = self._weights.get(key)
            if cached is None or cached.version != self.resolver.version:
                cached = self._weights[key] = _Weights(tuple(deps), self.resolver.version,
                                                       self._instance_weights(deps, prefer_zone, NOTHING))
            weights = cached.weights
        return deps[choose_weighted(weights, self.rng)]

    def _instance_weights(self, deps: Sequence[Dependency], prefer_zone: bool,
                          ejected: set[str] | frozenset[str]) -> list[int]:
        candidates = []
        for dep in deps:
            preferred, fallback = self.dependency_endpoints(dep)
            candidates.append(preferred or fallback)
        return instance_weights(candidates, own_zone=self.zone, prefer_zone=prefer_zone, ejected=ejected)

    # -- sending -----------------------------------------------------------------

    async def call_dependency(
        self, hop: Hop, dep: Dependency, method: str, path: str, *, body: Any = None, prefer_zone: bool = True
    ) -> Result:
        preferred, fallback = self.dependency_endpoints(dep)
        return await self.call(hop, dep.service, [preferred, fallback], method, path, body=body,
                               prefer_zone=prefer_zone)

    async def call(
        self,
        hop: Hop,
        peer: str,
        groups: Sequence[Sequence[Endpoint]],
        method: str,
        path: str,
        *,
        body: Any = None,
        prefer_zone: bool = True,
        ordered: bool = False,
    ) -> Result:
        """Send to one endpoint of the first group that has a healthy one; retry once elsewhere.

        `ordered` tries endpoints in the given order (ring owner first)
        instead of choosing at random.
        """
        edge = self.metrics.client(peer)
        started = time.monotonic()
        tried: set[str] = set()
        result = Result(502, {}, None, f"{peer}: no healthy instance")
        self.retry_budget.earn()
        for attempt in range(2):
            endpoint = self._choose(groups, tried, prefer_zone, ordered)
            if endpoint is None:
                break
            budget = hop.remaining()
            if budget < MIN_ATTEMPT_SECONDS:
                result = Result(504, {}, None, f"{peer}: budget exhausted")
                break
            if attempt:
                if not self.retry_budget.spend():
                    break  # the first attempt's failure is the answer
                edge.retries += 1
            tried.add(endpoint.key)
            result, retryable = await self._attempt(hop, peer, endpoint, min(self.timeout, budget), method, path, body)
            if not retryable:
                break
        edge.observe(time.monotonic() - started)
        return result

    def _choose(
        self, groups: Sequence[Sequence[Endpoint]], tried: set[str], prefer_zone: bool, ordered: bool
    ) -> Endpoint | None:
        ejected = self.health.ejected()
        chosen = self._first_available(groups, ejected, tried, prefer_zone, ordered)
        if chosen is not None or not ejected:
            return chosen  # with nothing ejected, the dead-only pass would find the same nothing
        return self._first_available(groups, self.health.ejected(dead_only=True), tried, prefer_zone, ordered)

    def _first_available(
        self, groups: Sequence[Sequence[Endpoint]], ejected: set[str] | frozenset[str], tried: set[str],
        prefer_zone: bool,
        ordered: bool,
    ) -> Endpoint | None:
        for group in groups:
            if ordered:
                chosen = next((e for e in group if e.key not in ejected and e.key not in tried), None)
            else:
                chosen = choose_endpoint(group, own_zone=self.zone, prefer_zone=prefer_zone, ejected=ejected,
                                         exclude=tried, rng=self.rng)
            if chosen is not None:
                return chosen
        return None

    async def _attempt(
        self, hop: Hop, peer: str, endpoint: Endpoint, timeout: float, method: str, path: str, body: Any
    ) -> tuple[Result, bool]:
        """One request; returns the result and whether another instance may be tried."""
        edge = self.metrics.client(peer)
        edge.requests += 1
        trace = hop.trace.child(self.rng)
        headers = hop.outgoing(handed_budget(timeout), self.config.service, trace)
        started = time.monotonic()
        payload = None if body is None else json.dumps(body).encode()
        head = request_head(method, path, authority(endpoint.address, endpoint.port), headers.items(),
                            None if payload is None else len(payload))
        retryable = False
        try:
            # a timed-out (or cancelled) call leaves its connection reading the late answer for
            # LATE_ANSWER_SECONDS, so the connection goes back to the pool
            status, raw = await self.pool.request(method, endpoint.address, endpoint.port, head, payload, timeout)
        except asyncio.TimeoutError:
            edge.timeouts += 1
            self.health.failure(endpoint.key, hard=False)
            result, retryable = Result(504, {}, endpoint, f"{peer} {endpoint.key}: timed out after {timeout * 1000:.0f} ms"), True
        except OSError as err:  # refused, reset, closed early, not HTTP (ProtocolError)
            self.health.failure(endpoint.key, hard=True)
            result, retryable = Result(502, {}, endpoint, f"{peer} {endpoint.key}: {type(err).__name__}: {err}"), True
        else:
            result = Result(status, _json(raw), endpoint)
            if status in RETRYABLE_STATUS:
                self.health.failure(endpoint.key, hard=False)
                result.error, retryable = f"{peer} {endpoint.key}: draining or overloaded (503)", True
            else:
                self.health.success(endpoint.key)
                if status >= 500:
                    result.error = str(result.body.get("error", f"{peer} {endpoint.key}: HTTP {status}"))
        if not result.ok and result.status >= 500:
            edge.errors += 1
        if self.exporter.enabled and trace.sampled:
            self.exporter.record(zipkin_span(
                trace, name=span_name(method, path), kind="CLIENT", service=self.config.service,
                address=self.address, start=wall_time(started), duration=time.monotonic() - started, remote=peer,
                tags={"http.status_code": str(result.status), "peer.address": endpoint.key},
            ))
        return result, retryable and hop.remaining() >= MIN_ATTEMPT_SECONDS


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
