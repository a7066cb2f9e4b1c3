"""The contract between the render step and everything that runs what it renders.

The operator, the nanoservice and the local runner all import this module and
nothing else from each other: label keys, ports, environment names, mount
paths and the nanoservice configuration format live here once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

API_GROUP = "simiankube.io"
API_VERSION = "v1alpha1"
KIND = "Architecture"
PLURAL = "architectures"

# -- labels and annotations -------------------------------------------------
LABEL_ARCHITECTURE = f"{API_GROUP}/architecture"
LABEL_SERVICE = f"{API_GROUP}/service"
LABEL_PACKAGE = f"{API_GROUP}/package"
LABEL_REGION = f"{API_GROUP}/region"
LABEL_ZONE = f"{API_GROUP}/zone"
# Set on pods of a service `s` for every service `d` it depends on
# (`simiankube.io/calls-<d>: "true"`), so a NetworkPolicy admits callers by
# one label selector instead of one rule per caller.
LABEL_CALLS_PREFIX = f"calls.{API_GROUP}/"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "simiankube"

ANNOTATION_SPIGO_NAME = f"{API_GROUP}/spigo-name"
ANNOTATION_CONFIG_HASH = f"{API_GROUP}/config-hash"

# -- the nanoservice process --------------------------------------------------
HTTP_PORT = 8080
HTTP_PORT_NAME = "http"
CONFIG_DIR = "/etc/simiankube"
CONFIG_KEY = "config.json"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
SCRATCH_DIR = "/tmp"

ENV_CONFIG = "SIMIANKUBE_CONFIG"  # path of the JSON configuration file
ENV_INSTANCE = "SIMIANKUBE_INSTANCE"  # this instance's name (the pod name)
ENV_ZONE = "SIMIANKUBE_ZONE"  # this instance's zone; empty when unknown
ENV_POD_IP = "SIMIANKUBE_POD_IP"  # the pod's IP: spans' localEndpoint (the listen address is 0.0.0.0)
ENV_LISTEN = "SIMIANKUBE_LISTEN"  # host:port to bind; default 0.0.0.0:HTTP_PORT
ENV_HOSTS = "SIMIANKUBE_HOSTS"  # local mode only: path of a HostsTable JSON file
ENV_ZIPKIN_FILE = "SIMIANKUBE_ZIPKIN_FILE"
ENV_ZIPKIN_URL = "SIMIANKUBE_ZIPKIN_URL"

PATH_HEALTH = "/healthz"
PATH_READY = "/readyz"
PATH_METRICS = "/metrics"

# Zones of a region, as spigo names them; an instance's zone is its index mod 3.
ZONES = ("zoneA", "zoneB", "zoneC")
# Region and zone of a service with `regions: 0` (spigo writes "*").
GLOBAL_REGION = "global"
ANY_ZONE = "any"


@dataclass(frozen=True)
class Latency:
    """Service time added by a nanoservice before it answers (milliseconds)."""

    distribution: str = "exponential"  # constant | uniform | normal | exponential
    mean_ms: float = 0.5
    stddev_ms: float = 0.0  # normal only
    max_ms: float = 1000.0  # every draw is clipped to [0, max_ms]


@dataclass(frozen=True)
class Behavior:
    """How a service behaves beyond what its package does."""

    latency: Latency = field(default_factory=Latency)
    error_rate: float = 0.0  # fraction of requests answered 500, 0..1
    payload_bytes: int = 0  # extra bytes in every response body
    timeout_ms: float = 500.0  # per-hop timeout before the remaining budget caps it
    # Routers (elb, zuul, karyon, monolith): "one" sends each request to one dependency instance chosen at
    # random over the instances of all dependencies (spigo's router.Random); "all" calls every dependency.
    fanout: str = "one"
    # Data packages (store, cache, volume, priamCassandra, riak): share of gets for a stored key that hit;
    # the rest answer a miss, so a caller such as staash pays for the slower tier behind (spigo's hit rates).
    hit_rate: float = 1.0


@dataclass(frozen=True)
class Traffic:
    """What a traffic source (denominator) sends; a self-driven service sends it spread over its instances."""

    interval_ms: float = 10.0  # one new trace per tick, spigo's default
    put_percent: float = 100.0 / 3  # share of traces that are puts of new keys (spigo: a third); the rest are
    # gets, half of the key every store is seeded with, half of a key put earlier
    deadline_ms: float = 2000.0  # budget of one user request, end to end
    max_hops: int = 16  # bounds dependency cycles


@dataclass(frozen=True)
class Target:
    """The instances of one dependency in one region.

    `host` is a Service name that reaches any ready instance (zone-first on
    Kubernetes); `peers_host` resolves to every ready instance (headless);
    `instances` names each instance when the package needs identities (rings).
    Names are namespace-relative, so one configuration fits any namespace.
    """

    region: str
    host: str
    peers_host: str
    port: int = HTTP_PORT
    instances: tuple[Instance, ...] = ()


@dataclass(frozen=True)
class Instance:
    """One addressable instance of a stateful dependency."""

    name: str
    host: str
    zone: str


@dataclass(frozen=True)
class Dependency:
    service: str  # spigo name
    package: str
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class NanoserviceConfig:
    """Everything one nanoservice needs, rendered once per service and region.

    Serialised as JSON under CONFIG_KEY in a ConfigMap; the local runner feeds
    the very same document to local processes.
    """

    architecture: str
    service: str  # spigo name
    package: str
    region: str
    behavior: Behavior
    dependencies: tuple[Dependency, ...]
    traffic: Traffic | None  # set for services that start traces: traffic sources and self-driven services
    # Every instance of this service in this region (rings and replication).
    peers: tuple[Instance, ...] = ()
    # Zone-to-zone and region-to-region replication go through the registry.
    registry: bool = False
    port: int = HTTP_PORT
    # The architecture's budget and hop limit (spec.traffic): what a request arriving without them gets, and
    # the most any caller may ask for.
    deadline_ms: float = Traffic.deadline_ms
    max_hops: int = Traffic.max_hops
    # The services that depend on this one: the only caller names its metrics label (others count as "other").
    callers: tuple[str, ...] = ()
    # Seconds: a dependency this instance has not called for this long gets one call of its own (a trace
    # with a get of the seeded key), so an edge deep in a wide graph never stays silent; 0: never.
    keep_warm_s: float = 0.0

    def to_json(self) -> str:
        return to_json(self)

    @classmethod
    def from_json(cls, text: str) -> NanoserviceConfig:
        return config_from_dict(json.loads(text))


def to_json(value: Any) -> str:
    """The configuration's JSON encoding (compact, sorted keys) of any of its parts."""
    return _ENCODER.encode(value)


def _fields(value: Any) -> dict[str, Any]:
    """One dataclass above as a dict, for the JSON encoder, which writes tuples and scalars itself (a walk of
    the whole tree in Python costs most of a render; dataclasses.asdict deep-copies: slower still). The
    instance's own `__dict__` when it holds exactly the fields (the encoder only reads it; a third of the
    time of a copy), else a copy of the fields only (say a cached_property had stored a value there)."""
    names = getattr(type(value), "__dataclass_fields__", None)  # no ClassVars here: all are fields
    if names is None:
        raise TypeError(f"not JSON serializable: {type(value).__name__}")
    own: dict[str, Any] = value.__dict__
    if len(own) == len(names):
        return own
    return {name: getattr(value, name) for name in names}


# One encoder for every call: json.dumps with options builds a new one each time (a render encodes 20,000
# parts). It keeps no state between calls.
_ENCODER = json.JSONEncoder(default=_fields, sort_keys=True, separators=(",", ":"))


def config_from_dict(data: dict[str, Any]) -> NanoserviceConfig:
    def instances(items: list[dict[str, Any]]) -> tuple[Instance, ...]:
        return tuple(Instance(**item) for item in items)

    return NanoserviceConfig(
        architecture=data["architecture"],
        service=data["service"],
        package=data["package"],
        region=data["region"],
        behavior=Behavior(
            latency=Latency(**data["behavior"]["latency"]),
            **{k: v for k, v in data["behavior"].items() if k != "latency"},
        ),
        dependencies=tuple(
            Dependency(
                service=dep["service"],
                package=dep["package"],
                targets=tuple(
                    Target(
                        region=t["region"],
                        host=t["host"],
                        peers_host=t["peers_host"],
                        port=t["port"],
                        instances=instances(t["instances"]),
                    )
                    for t in dep["targets"]
                ),
            )
            for dep in data["dependencies"]
        ),
        traffic=Traffic(**data["traffic"]) if data.get("traffic") else None,
        peers=instances(data.get("peers", [])),
        registry=data.get("registry", False),
        port=data.get("port", HTTP_PORT),
        deadline_ms=data.get("deadline_ms", Traffic.deadline_ms),
        max_hops=data.get("max_hops", Traffic.max_hops),
        callers=tuple(data.get("callers", ())),
        keep_warm_s=data.get("keep_warm_s", 0.0),
    )
