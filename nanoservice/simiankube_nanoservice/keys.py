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


CONFIG = web.AppKey("config", NanoserviceConfig)
IDENTITY = web.AppKey("identity", Identity)
RNG = web.AppKey("rng", random.Random)
METRICS = web.AppKey("metrics", Metrics)
RESOLVER = web.AppKey("resolver", Resolver)
EXPORTER = web.AppKey("exporter", SpanExporter)
STATUS = web.AppKey("status", Status)
SESSION = web.AppKey("session", aiohttp.ClientSession)
CALLER = web.AppKey("caller", Caller)
PACKAGE = web.AppKey("package", Package)
PAYLOAD = web.AppKey("payload", str)  # behavior.payload_bytes of filler, built once
