"""Everything a nanoservice keeps on its Application, under typed keys (no globals)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from simiankube.contract import NanoserviceConfig
from simiankube.nanoservice.client import Caller
from simiankube.nanoservice.metrics import Metrics
from simiankube.nanoservice.packages import Package
from simiankube.nanoservice.pool import Pool
from simiankube.nanoservice.probe import Scope
from simiankube.nanoservice.resolver import Resolver
from simiankube.nanoservice.tracing import SpanExporter


@dataclass(frozen=True)
class Identity:
    """Who this process is: set by the pod (env) or by the local runner."""

    instance: str  # the pod / local instance name
    zone: str  # "" when unknown (pods): every endpoint counts as own zone
    address: str  # where it listens (span endpoints)
    seed: int | None  # latency draws and routing choices; None = unseeded


@dataclass
class Status:
    ready: bool = False
    draining: bool = False
    in_flight: int = 0  # service requests admitted and not yet answered (only those that may wait)
    shed: int = 0  # requests answered 503 at once because `in_flight` had reached the limit


@dataclass(frozen=True, slots=True)
class Serving:
    """What every service request reads, resolved once at startup: one lookup per request instead of many."""

    config: NanoserviceConfig
    identity: Identity
    rng: random.Random
    metrics: Metrics
    exporter: SpanExporter
    package: Package
    payload: str  # behavior.payload_bytes of filler, built once
    calls_out: bool  # the package may call another instance (Package.calls_out)
    exporting: bool  # spans are exported
    traced: bool  # a trace context is needed: spans are exported or the package may call out (propagation)
    service_time: bool  # a latency draw can be above 0 (else none is drawn)
    status: Status  # readiness, draining and the requests in flight
    may_wait: bool  # a request can suspend (service time or calls out), so requests can pile up
    max_in_flight: int  # more waiting requests than this are shed (503)


CONFIG = web.AppKey("config", NanoserviceConfig)
IDENTITY = web.AppKey("identity", Identity)
RNG = web.AppKey("rng", random.Random)
METRICS = web.AppKey("metrics", Metrics)
RESOLVER = web.AppKey("resolver", Resolver)
EXPORTER = web.AppKey("exporter", SpanExporter)
STATUS = web.AppKey("status", Status)
SESSION = web.AppKey("session", aiohttp.ClientSession)
POOL = web.AppKey("pool", Pool)  # only when the process shares one between instances
CALLER = web.AppKey("caller", Caller)
MAX_IN_FLIGHT = web.AppKey("max_in_flight", int)
SERVING = web.AppKey("serving", Serving)  # set once the package is built
PROBE_SCOPE = web.AppKey("probe_scope", Scope)
READ_TIMEOUT = web.AppKey("read_timeout", float)  # seconds a request body may take to arrive
