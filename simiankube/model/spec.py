"""The Architecture spec: parse any accepted input into a validated model.

Accepted inputs: an `Architecture` custom resource (YAML or JSON) and a spigo
`*_arch.json` file as it is. Validation collects every problem before it
reports, each naming the field path and the offending value; a model that was
returned is a model that expands and renders.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import yaml

from simiankube import contract
from simiankube.contract import Behavior, Latency, Traffic
from simiankube.model.collector import cyclic_gc_paused
from simiankube.model.naming import bounded, kube_name

PACKAGES = (
    "denominator",
    "elb",
    "zuul",
    "karyon",
    "monolith",
    "staash",
    "store",
    "cache",
    "volume",
    "priamCassandra",
    "riak",
    "eureka",
    "pirate",
)
# Packages whose instances need stable identities (rings, replicas).
STATEFUL_PACKAGES = frozenset({"store", "cache", "volume", "priamCassandra", "riak"})
TRAFFIC_SOURCE_PACKAGES = frozenset({"denominator"})
REGISTRY = "eureka"  # always a known dependency name, as in spigo
DEFAULT_REGION_NAMES = (
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-southeast-1",
    "ap-southeast-2",
)
LATENCY_DISTRIBUTIONS = ("constant", "uniform", "normal", "exponential")
FANOUTS = ("one", "all")
ROUTER_PACKAGES = frozenset({"elb", "zuul", "karyon", "monolith"})  # behavior.fanout applies to these
SEGMENTATION_MODES = ("enforced", "allow-all")
SPIGO_SERVICE_EXTRAS = ("machine", "instance", "container", "process")
# libyaml's loader when PyYAML was built with it: ten times faster on large architectures.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_REGION_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class SpecError(Exception):
    """Raised with every problem found in one input; nothing may be applied."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{where}{len(problems)} problem(s):\n{lines}")


@dataclass(frozen=True)
class Service:
    name: str  # spigo name, as written
    package: str
    count: int
    regions: int
    dependencies: tuple[str, ...]
    behavior: Behavior = field(default_factory=Behavior)
    extras: tuple[tuple[str, str], ...] = ()  # spigo's machine/instance/container/process

    @cached_property
    def kube_name(self) -> str:
        """Cached on the instance (a render asks 140,000 times at 10,000 services); derived from `name` only,
        which a frozen Service never changes."""
        return kube_name(self.name)

    @property
    def stateful(self) -> bool:
        return self.package in STATEFUL_PACKAGES


@dataclass(frozen=True)
class Scale:
    percent: int = 100  # spigo -p: multiplies every count
    regions: int = 1  # spigo -w: multiplies every service's regions


@dataclass(frozen=True)
class Chaos:
    """The chaos controller's settings (the operator's simian army)."""

    enabled: bool = False
    victim: str = ""  # default: the architecture's victim
    interval_seconds: float = 600.0  # mean time between kills
    max_kills: int = 0  # total kills recorded in status.chaos.kills (survives restarts); 0 = unlimited
    dry_run: bool = False
    min_pod_age_seconds: float = 60.0
    grace_period_seconds: int = 10
    min_ready: int = 1  # never kill when fewer ready instances would remain
    # When not to kill (as chaoskube): weekdays (Mon..Sun) and times of day ("22:00-08:00" wraps past
    # midnight), both in this IANA time zone.
    timezone: str = "UTC"
    excluded_weekdays: tuple[str, ...] = ()
    excluded_times_of_day: tuple[str, ...] = ()


@dataclass(frozen=True)
class Segmentation:
    """NetworkPolicy settings; peers are NetworkPolicyPeer objects, verbatim."""

    mode: str = "enforced"  # enforced | allow-all
    metrics_from: tuple[dict[str, Any], ...] = (
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    )
    # Entry services admit any pod of the namespace that is no simulated service (a user's client, a load
    # generator). The architecture's own pods would get no further anyway (default deny confines their egress to
    # their dependencies), but `{}` let the pods of one entry service reach each other under kube-router, which
    # checks a pod's egress against its own policy's ingress peers too.
    clients_from: tuple[dict[str, Any], ...] = (
        {"podSelector": {"matchExpressions": [{"key": contract.LABEL_ARCHITECTURE, "operator": "DoesNotExist"}]}},
    )
    verify_interval_seconds: float = 0.0  # 0 = never verify periodically


@dataclass(frozen=True)
class Architecture:
    name: str  # spigo's `arch`
    resource_name: str  # the Kubernetes name: the CR's metadata.name, else derived from `name`
    description: str
    version: str
    victim: str
    services: tuple[Service, ...]
    scale: Scale = field(default_factory=Scale)
    region_names: tuple[str, ...] = DEFAULT_REGION_NAMES
    traffic: Traffic = field(default_factory=Traffic)
    # spec.traffic.selfDriven: services no traffic source reaches start traces themselves (`self_driven`);
    # false keeps spigo's behaviour, traffic from traffic sources only (their edges then carry no calls).
    self_driving: bool = True
    chaos: Chaos = field(default_factory=Chaos)
    segmentation: Segmentation = field(default_factory=Segmentation)
    args: str = ""
    date: str = ""
    warnings: tuple[str, ...] = ()

    def service(self, name: str) -> Service:
        return self._by_name[name]

    def has_service(self, name: str) -> bool:
        return name in self._by_name

    @cached_property
    def _by_name(self) -> dict[str, Service]:
        return {s.name: s for s in self.services}

    def callees(self, name: str) -> tuple[str, ...]:
        """The dependencies of service `name` that are services of the architecture, in spec order (a
        dependency on the registry `eureka` is no call)."""
        return self._callees[name]

    @cached_property
    def _callees(self) -> dict[str, tuple[str, ...]]:
        return {s.name: tuple(d for d in s.dependencies if d in self._by_name) for s in self.services}

    @cached_property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """(caller, callee) for every dependency that names a service of the architecture, in spec order."""
        return tuple((s.name, d) for s in self.services for d in self.callees(s.name))

    @cached_property
    def traffic_sources(self) -> tuple[str, ...]:
        """The services that stand for users (package `denominator`), in spec order: their requests are
        the user requests every figure of user experience counts."""
        return tuple(s.name for s in self.services if s.package in TRAFFIC_SOURCE_PACKAGES)

    @cached_property
    def self_driven(self) -> frozenset[str]:
        """The services that start traces of their own (`self_driven`, none when spec.traffic.selfDriven is
        false), computed once per architecture."""
        return frozenset(self_driven(self.services)) if self.self_driving else frozenset()

    def starts_traces(self, name: str) -> bool:
        """Whether a service starts traces: a traffic source, or a service that drives itself. Every part
        that starts, groups or counts trace starters asks this."""
        return self.service(name).package in TRAFFIC_SOURCE_PACKAGES or name in self.self_driven

    def with_scale(self, percent: int | None = None, regions: int | None = None) -> Architecture:
        """Override the scale from the command line; the result is validated again."""
        scale = Scale(
            percent=self.scale.percent if percent is None else percent,
            regions=self.scale.regions if regions is None else regions,
        )
        problems = _check_scale(scale, self.services, self.region_names, "", "--regions")
        if problems:
            raise SpecError(problems)
        return replace(self, scale=scale)


def extend_reach(reached: set[str], start: str, next_of: Callable[[str], Iterable[str]]) -> None:
    """Add `start` and every name it leads to through `next_of` (depth first) to `reached`."""
    stack = [start]
    while stack:
        name = stack.pop()
        if name not in reached:
            reached.add(name)
            stack.extend(next_of(name))


def self_driven(services: Sequence[Service]) -> tuple[str, ...]:
    """The services that must start traces themselves so that every declared edge carries calls.

    Traffic only flows from traffic sources (package `denominator`) along dependencies, so a service no
    source reaches would never call its dependencies. Real systems have such services (queue consumers,
    batch workers, cron jobs): they start work themselves. The rule, in spec order, deterministic:
    1. every unreached service nobody else calls (a call to itself does not count);
    2. then, while a service is still unreached (a cycle nobody outside calls), the first unreached one.
    A service with no dependency among the architecture's services has no edge to exercise: it is never
    chosen (it stays idle when nothing calls it). Traffic sources are never in the result.
    """
    names = {s.name for s in services}
    deps = {s.name: [d for d in s.dependencies if d in names] for s in services}
    called = {d for s in services for d in deps[s.name] if d != s.name}
    reached: set[str] = set()

    def reach(start: str) -> None:
        extend_reach(reached, start, deps.__getitem__)

    for s in services:
        if s.package in TRAFFIC_SOURCE_PACKAGES:
            reach(s.name)
    chosen: list[str] = []
    for s in services:
        if s.name not in reached and s.name not in called and deps[s.name]:
            chosen.append(s.name)
            reach(s.name)
    for s in services:
        if s.name not in reached and deps[s.name]:
            chosen.append(s.name)
            reach(s.name)
    return tuple(chosen)


# -- reading -----------------------------------------------------------------


def load_file(path: str | Path) -> Architecture:
    """Read and validate one file of any accepted format."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError([f"cannot read file: {err.strerror}"], str(path)) from err
    return parse_text(text, source=str(path))


def parse_text(text: str, source: str = "") -> Architecture:
    document = read_document(text, source)
    try:
        return parse_document(document)
    except SpecError as err:
        raise SpecError(err.problems, source) from None


def read_document(text: str, source: str = "") -> Any:
    """The data in a YAML or JSON text, before it is read as an architecture."""
    try:
        with cyclic_gc_paused():  # tens of thousands of acyclic objects at 10,000 services
            if text.lstrip().startswith("{"):
                document = json.loads(text)  # spigo's files hold tabs, which YAML rejects
            else:
                document = yaml.load(text, Loader=_YAML_LOADER)
    except json.JSONDecodeError as err:
        raise SpecError([f"unparseable input at line {err.lineno}, column {err.colno}: {err.msg}"], source) from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError([f"unparseable input{where}: {problem}"], source) from err
    return document


def parse_document(document: Any) -> Architecture:
    """Accept a CR (`kind: Architecture`) or a spigo architecture document."""
    with cyclic_gc_paused():  # validation builds tens of thousands of acyclic objects at 10,000 services
        return _parse_document(document)


def _parse_document(document: Any) -> Architecture:
    if not isinstance(document, dict):
        raise SpecError([f"document: expected a mapping, got {_kind(document)}"])
    if "services" in document and "spec" not in document:
        return parse_spec(document, path="")  # spigo's file is already a spec
    kind = document.get("kind")
    if kind != contract.KIND:
        raise SpecError([f"kind: expected {quote(contract.KIND)} or a spigo architecture, got {quote(kind)}"])
    problems = []
    api_version = document.get("apiVersion")
    expected = f"{contract.API_GROUP}/{contract.API_VERSION}"
    if api_version != expected:
        problems.append(f"apiVersion: expected {quote(expected)}, got {quote(api_version)}")
    spec = document.get("spec")
    metadata = document.get("metadata") or {}
    if not isinstance(spec, dict):
        raise SpecError(problems + [f"spec: expected a mapping, got {_kind(spec)}"])
    resource_name = metadata.get("name") if isinstance(metadata, dict) else None
    if "arch" not in spec and isinstance(resource_name, str) and resource_name:
        spec = {**spec, "arch": resource_name}
    if resource_name is not None and (not isinstance(resource_name, str) or kube_name(resource_name) != resource_name):
        problems.append(f"metadata.name: must be a lowercase RFC 1123 name, got {quote(resource_name)}")
        resource_name = None
    try:
        arch = parse_spec(spec, path="spec.", resource_name=resource_name)
    except SpecError as err:
        raise SpecError(problems + err.problems) from None
    if problems:
        raise SpecError(problems)
    return arch


def to_resource(arch: Architecture) -> dict[str, Any]:
    """The `Architecture` custom resource for a model (what `import` prints)."""
    spec: dict[str, Any] = {
        "arch": arch.name,
        "description": arch.description,
        "version": arch.version,
        "victim": arch.victim,
    }
    if arch.args:
        spec["args"] = arch.args
    if arch.date:
        spec["date"] = arch.date
    spec["services"] = [
        {
            "name": s.name,
            "package": s.package,
            "count": s.count,
            "regions": s.regions,
            "dependencies": list(s.dependencies),
            **dict(s.extras),
        }
        for s in arch.services
    ]
    return {
        "apiVersion": f"{contract.API_GROUP}/{contract.API_VERSION}",
        "kind": contract.KIND,
        "metadata": {"name": arch.resource_name},
        "spec": spec,
    }


# -- validation ------------------------------------------------------------------


class _Reader:
    """Reads typed fields from a mapping, collecting problems instead of raising."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems

    def field(self, data: dict[str, Any], key: str, path: str, kind: type | tuple[type, ...], default: Any) -> Any:
        if key not in data or data[key] is None:
            return default
        value = data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = isinstance(value, kinds) or (float in kinds and isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            self.problems.append(f"{path}{key}: expected {names}, got {quote(value)}")
            return default
        return float(value) if float in kinds and not isinstance(value, bool) and int not in kinds else value

    def mapping(self, data: dict[str, Any], key: str, path: str) -> dict[str, Any]:
        return self.field(data, key, path, dict, {})  # type: ignore[no-any-return]

    def number(self, data: dict[str, Any], key: str, path: str, default: float, low: float, high: float | None = None) -> float:
        value = self.field(data, key, path, float, default)
        if value < low or (high is not None and value > high):
            bound = f"between {_number(low)} and {_number(high)}" if high is not None else f">= {_number(low)}"
            self.problems.append(f"{path}{key}: must be {bound}, got {quote(data[key])}")
            return default
        return float(value)

    def integer(self, data: dict[str, Any], key: str, path: str, default: int, low: int) -> int:
        value = self.field(data, key, path, int, default)
        if value < low:
            self.problems.append(f"{path}{key}: must be >= {low}, got {quote(value)}")
            return default
        return int(value)

    def choice(self, data: dict[str, Any], key: str, path: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.field(data, key, path, str, default)
        if value not in choices:
            self.problems.append(f"{path}{key}: must be one of {', '.join(choices)}, got {quote(value)}")
            return default
        return str(value)


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", dict: "a mapping", list: "a list"}

SPEC_KEYS = frozenset(
    {"arch", "description", "version", "victim", "args", "date", "services", "scale", "regionNames",
     "traffic", "chaos", "segmentation"}
)
SERVICE_KEYS = frozenset({"name", "package", "count", "regions", "dependencies", "behavior", *SPIGO_SERVICE_EXTRAS})


def parse_spec(spec: dict[str, Any], path: str, resource_name: str | None = None) -> Architecture:
    problems: list[str] = []
    read = _Reader(problems)
    for key in sorted(set(spec) - SPEC_KEYS):
        problems.append(f"{path}{key}: unknown field")
    name = read.field(spec, "arch", path, str, "")
    if not name:
        problems.append(f"{path}arch: required (the architecture's name)")
    elif not resource_name and not kube_name(name):
        problems.append(f"{path}arch: {quote(name)} has no letters or digits to name it by")
    region_names = _region_names(spec, path, problems)
    services = _services(spec, path, read, problems)
    scale_data = read.mapping(spec, "scale", path)
    scale = Scale(
        percent=read.integer(scale_data, "percent", f"{path}scale.", 100, 1),
        regions=read.integer(scale_data, "regions", f"{path}scale.", 1, 1),
    )
    problems += _check_scale(scale, services, region_names, path, f"{path}scale.regions")
    victim = read.field(spec, "victim", path, str, "")
    names = {s.name for s in services}
    if victim and victim not in names:
        problems.append(f"{path}victim: not a service: {quote(victim)}")
    traffic_data = read.mapping(spec, "traffic", path)
    traffic = _traffic(traffic_data, f"{path}traffic.", read)
    self_driving = read.field(traffic_data, "selfDriven", f"{path}traffic.", bool, True)
    chaos = _chaos(read.mapping(spec, "chaos", path), f"{path}chaos.", read, names)
    segmentation = _segmentation(read.mapping(spec, "segmentation", path), f"{path}segmentation.", read)
    description = read.field(spec, "description", path, str, "")
    version = read.field(spec, "version", path, str, "arch-0.0")
    args = read.field(spec, "args", path, str, "")
    date = read.field(spec, "date", path, str, "")
    if problems:
        raise SpecError(problems)
    return Architecture(
        name=name,
        resource_name=bounded(resource_name or kube_name(name), 40),
        description=description,
        version=version,
        victim=victim,
        services=tuple(services),
        scale=scale,
        region_names=region_names,
        traffic=traffic,
        self_driving=self_driving,
        chaos=chaos,
        segmentation=segmentation,
        args=args,
        date=date,
        warnings=tuple(_cycle_warnings(services, path)),
    )


def _region_names(spec: dict[str, Any], path: str, problems: list[str]) -> tuple[str, ...]:
    value = spec.get("regionNames")
    if value is None:
        return DEFAULT_REGION_NAMES
    if not isinstance(value, list) or not value:
        problems.append(f"{path}regionNames: expected a non-empty list of region names, got {quote(value)}")
        return DEFAULT_REGION_NAMES
    seen: set[str] = set()
    for i, region in enumerate(value):
        if not isinstance(region, str) or not _REGION_NAME.match(region) or len(region) > 20:
            problems.append(
                f"{path}regionNames[{i}]: must be a lowercase DNS label of at most 20 characters, got {quote(region)}"
            )
        elif region in seen or region == contract.GLOBAL_REGION:
            problems.append(f"{path}regionNames[{i}]: duplicate or reserved region name {quote(region)}")
        seen.add(str(region))
    return tuple(str(r) for r in value)


def _services(spec: dict[str, Any], path: str, read: _Reader, problems: list[str]) -> list[Service]:
    raw = spec.get("services")
    if not isinstance(raw, list) or not raw:
        problems.append(f"{path}services: expected a non-empty list of services, got {quote(raw)}")
        return []
    services: list[Service] = []
    first_index: dict[str, int] = {}
    for i, item in enumerate(raw):
        at = f"{path}services[{i}]."
        if not isinstance(item, dict):
            problems.append(f"{path}services[{i}]: expected a mapping, got {quote(item)}")
            continue
        for key in sorted(set(item) - SERVICE_KEYS):
            problems.append(f"{at}{key}: unknown field")
        name = read.field(item, "name", at, str, "")
        if not name:
            problems.append(f"{at}name: required")
            continue
        if name in first_index:
            problems.append(f"{at}name: duplicate service {quote(name)} (first at {path}services[{first_index[name]}])")
            continue
        first_index[name] = i
        package = read.field(item, "package", at, str, "")
        if package not in PACKAGES:
            problems.append(f"{at}package: unknown package {quote(package)} (known: {', '.join(PACKAGES)})")
        count = read.integer(item, "count", at, 0, 0)
        regions = read.integer(item, "regions", at, 0, 0)  # absent is 0 (global), as in spigo
        deps_raw = item.get("dependencies") or []
        if not isinstance(deps_raw, list):
            problems.append(f"{at}dependencies: expected a list of service names, got {quote(deps_raw)}")
            deps_raw = []
        deps: list[str] = []
        for j, dep in enumerate(deps_raw):
            if not isinstance(dep, str) or not dep:
                problems.append(f"{at}dependencies[{j}]: expected a service name, got {quote(dep)}")
            elif dep in deps:
                problems.append(f"{at}dependencies[{j}]: duplicate dependency {quote(dep)}")
            else:
                deps.append(dep)
        behavior = _behavior(read.mapping(item, "behavior", at), f"{at}behavior.", read, package)
        extras = tuple(
            (key, str(read.field(item, key, at, str, ""))) for key in SPIGO_SERVICE_EXTRAS if item.get(key) is not None
        )
        services.append(Service(name, package, count, regions, tuple(deps), behavior, extras))

    known = {s.name for s in services} | {REGISTRY}
    kube_names: dict[str, str] = {}
    for i, service in enumerate(services):
        index = first_index[service.name]
        for j, dep in enumerate(service.dependencies):
            if dep not in known:
                problems.append(f"{path}services[{index}].dependencies[{j}]: unknown service {quote(dep)}")
        mapped = service.kube_name
        if not mapped:
            problems.append(f"{path}services[{index}].name: {quote(service.name)} has no letters or digits to name it by")
        elif mapped in kube_names:
            problems.append(
                f"{path}services[{index}].name: {quote(service.name)} and {quote(kube_names[mapped])} "
                f"both map to the Kubernetes name {quote(mapped)}"
            )
        else:
            kube_names[mapped] = service.name
    return services


def _check_scale(
    scale: Scale, services: Sequence[Service], region_names: tuple[str, ...], path: str, factor_name: str
) -> list[str]:
    """Scale bounds, and that every service has enough region names to span."""
    problems = []
    if scale.percent < 1:
        problems.append(f"{path or '--'}scale: percent must be >= 1, got {scale.percent}")
    if scale.regions < 1:
        problems.append(f"{factor_name}: must be >= 1, got {scale.regions}")
        return problems
    for i, service in enumerate(services):
        needed = service.regions * scale.regions
        if needed > len(region_names):
            problems.append(
                f"{path}services[{i}].regions: {quote(service.name)} spans {service.regions} region(s) x "
                f"{factor_name} {scale.regions} = {needed}, but there are only {len(region_names)} region names "
                f"({', '.join(region_names)}); add regionNames"
            )
    return problems


def _behavior(data: dict[str, Any], path: str, read: _Reader, package: str) -> Behavior:
    if not data:
        return Behavior()  # the defaults, without reading each field of nothing (most services say none)
    latency_data = read.mapping(data, "latency", path)
    at = f"{path}latency."
    defaults = Latency()
    latency = Latency(
        distribution=read.choice(latency_data, "distribution", at, defaults.distribution, LATENCY_DISTRIBUTIONS),
        mean_ms=read.number(latency_data, "meanMs", at, defaults.mean_ms, 0.0, 60_000.0),
        stddev_ms=read.number(latency_data, "stddevMs", at, defaults.stddev_ms, 0.0, 60_000.0),
        max_ms=read.number(latency_data, "maxMs", at, defaults.max_ms, 0.0, 60_000.0),
    )
    for key, packages in (("fanout", ROUTER_PACKAGES), ("hitRate", STATEFUL_PACKAGES)):
        if data.get(key) is not None and package in PACKAGES and package not in packages:
            read.problems.append(f"{path}{key}: applies to packages {', '.join(sorted(packages))} only, "
                                 f"not {quote(package)}")
    base = Behavior()
    return Behavior(
        latency=latency,
        error_rate=read.number(data, "errorRate", path, base.error_rate, 0.0, 1.0),
        payload_bytes=read.integer(data, "payloadBytes", path, base.payload_bytes, 0),
        timeout_ms=read.number(data, "timeoutMs", path, base.timeout_ms, 1.0, 60_000.0),
        fanout=read.choice(data, "fanout", path, base.fanout, FANOUTS),
        hit_rate=read.number(data, "hitRate", path, base.hit_rate, 0.0, 1.0),
    )


def _traffic(data: dict[str, Any], path: str, read: _Reader) -> Traffic:
    base = Traffic()
    return Traffic(
        interval_ms=read.number(data, "intervalMs", path, base.interval_ms, 0.1, 3_600_000.0),
        put_percent=read.number(data, "putPercent", path, base.put_percent, 0.0, 100.0),
        deadline_ms=read.number(data, "deadlineMs", path, base.deadline_ms, 1.0, 600_000.0),
        max_hops=read.integer(data, "maxHops", path, base.max_hops, 1),
    )


def _chaos(data: dict[str, Any], path: str, read: _Reader, names: set[str]) -> Chaos:
    base = Chaos()
    victim = read.field(data, "victim", path, str, "")
    if victim and victim not in names:
        read.problems.append(f"{path}victim: not a service: {quote(victim)}")
    return Chaos(
        enabled=read.field(data, "enabled", path, bool, base.enabled),
        victim=victim,
        interval_seconds=read.number(data, "intervalSeconds", path, base.interval_seconds, 1.0),
        max_kills=read.integer(data, "maxKills", path, base.max_kills, 0),
        dry_run=read.field(data, "dryRun", path, bool, base.dry_run),
        min_pod_age_seconds=read.number(data, "minPodAgeSeconds", path, base.min_pod_age_seconds, 0.0),
        grace_period_seconds=read.integer(data, "gracePeriodSeconds", path, base.grace_period_seconds, 0),
        min_ready=read.integer(data, "minReady", path, base.min_ready, 0),
        timezone=_timezone(read.field(data, "timezone", path, str, base.timezone), f"{path}timezone", read),
        excluded_weekdays=_listed(data, "excludedWeekdays", path, read, lambda v: v in WEEKDAYS,
                                  f"one of {', '.join(WEEKDAYS)}"),
        excluded_times_of_day=_listed(data, "excludedTimesOfDay", path, read,
                                      lambda v: parse_time_window(v) is not None, 'a window "HH:MM-HH:MM"'),
    )


WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


def parse_time_window(value: str) -> tuple[int, int] | None:
    """``"22:00-08:00"`` → (1320, 480): minutes of the day, start and end (end < start wraps midnight)."""
    match = _WINDOW.match(value)
    if not match:
        return None
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    return h1 * 60 + m1, h2 * 60 + m2


def _timezone(name: str, path: str, read: _Reader) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        read.problems.append(f"{path}: unknown time zone {quote(name)} (an IANA name, e.g. Europe/Berlin)")
        return "UTC"
    return name


def _listed(data: dict[str, Any], key: str, path: str, read: _Reader, valid: Callable[[str], bool],
            expected: str) -> tuple[str, ...]:
    values = read.field(data, key, path, list, [])
    for i, value in enumerate(values):
        if not isinstance(value, str) or not valid(value):
            read.problems.append(f"{path}{key}[{i}]: expected {expected}, got {quote(value)}")
    return tuple(v for v in values if isinstance(v, str) and valid(v))


def _segmentation(data: dict[str, Any], path: str, read: _Reader) -> Segmentation:
    base = Segmentation()

    def peers(key: str, default: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        value = read.field(data, key, path, list, None)
        if value is None:
            return default
        for i, peer in enumerate(value):
            if not isinstance(peer, dict) or not peer:
                read.problems.append(f"{path}{key}[{i}]: expected a NetworkPolicyPeer mapping, got {quote(peer)}")
        return tuple(p for p in value if isinstance(p, dict))

    return Segmentation(
        mode=read.choice(data, "mode", path, base.mode, SEGMENTATION_MODES),
        metrics_from=peers("metricsFrom", base.metrics_from),
        clients_from=peers("clientsFrom", base.clients_from),
        verify_interval_seconds=read.number(data, "verifyIntervalSeconds", path, base.verify_interval_seconds, 0.0),
    )


def _cycle_warnings(services: list[Service], path: str) -> list[str]:
    """Dependency cycles are legal (spigo's compose importer makes them); say so."""
    graph = {s.name: [d for d in s.dependencies if d != s.name] for s in services}
    warnings = []
    for cycle in find_cycles(graph):
        loop = " -> ".join([*cycle, cycle[0]])
        warnings.append(
            f"{path}services: dependency cycle {loop}; allowed, bounded at run time by deadlines and the hop limit"
        )
    return warnings


def find_cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """One representative cycle per strongly connected component (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        # Iterative Tarjan: generated architectures can be deep.
        work = [(node, iter(graph.get(node, [])))]
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[current])
                if low[current] == index[current]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == current:
                            break
                    if len(component) > 1:
                        components.append(_cycle_through(sorted(component), graph))
            elif child not in graph:
                continue
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(graph.get(child, []))))
            elif child in on_stack:
                low[current] = min(low[current], index[child])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def _cycle_through(members: list[str], graph: dict[str, list[str]]) -> list[str]:
    """A shortest cycle from the first member back to itself inside its component."""
    inside = set(members)
    start = members[0]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in graph.get(node, []):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return path[::-1]
                if child in inside and child not in parents:
                    parents[child] = node
                    following.append(child)
        frontier = following
    return members


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def quote(value: Any) -> str:
    """A value as it would appear in the input (JSON style: "name", 3, null)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _kind(value: Any) -> str:
    kinds: dict[type, str] = {dict: "a mapping", list: "a list", str: "a string"}
    return kinds.get(type(value), quote(value))
