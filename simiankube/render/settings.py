"""Settings of the render step, passed in explicitly (never read from globals)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

# A Kubernetes resource quantity (k8s.io/apimachinery resource.Quantity): a non-negative
# number with an optional binary (Ki..Ei), decimal (n, u, m, k, M..E) or exponent suffix.
_QUANTITY = re.compile(r"^\+?(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_SCALE = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": Decimal("1e3"),
    "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"), "P": Decimal("1e15"), "E": Decimal("1e18"),
    **{f"{p}i": Decimal(1024) ** (i + 1) for i, p in enumerate("KMGTPE")},
}
RESOURCE_NAMES = ("cpu", "memory")
RESOURCE_SECTIONS = ("requests", "limits")


def quantity(value: str) -> Decimal:
    """The amount a Kubernetes quantity stands for; ValueError naming the value when it is none."""
    match = _QUANTITY.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 10m, 0.5, 64Mi, 1G)")
    suffix = match["suffix"] or ""
    scale = Decimal(10) ** int(suffix[1:]) if suffix[:1] in ("e", "E") else _SCALE[suffix]
    return Decimal(match["number"]) * scale


@dataclass(frozen=True)
class PodResources:
    """Requests and limits of every nanoservice container, as Kubernetes writes them.

    Small defaults so that netflixoss (65 pods) fits on one kind node; a small node running
    bigger architectures (or a rolling update's surge pods next to the old ones) needs smaller
    CPU requests: the chart's ``nanoservice.resources``, the operator's ``--nanoservice-resources``.
    """

    requests: tuple[tuple[str, str], ...] = (("cpu", "10m"), ("memory", "40Mi"))
    limits: tuple[tuple[str, str], ...] = (("memory", "128Mi"),)

    def as_kubernetes(self) -> dict[str, dict[str, str]]:
        return {name: dict(items) for name, items in (("requests", self.requests), ("limits", self.limits)) if items}


def parse_resources(document: Any, where: str = "resources") -> PodResources:
    """``{requests: {cpu, memory}, limits: {cpu, memory}}`` checked as the API server would check it,
    so that a bad value stops the operator at start, naming it, instead of failing every apply.
    A key left out is not set (as in a pod spec)."""
    if not isinstance(document, dict):
        raise ValueError(f"{where}: expected a mapping with requests and/or limits, got {document!r}")
    unknown = sorted(set(document) - set(RESOURCE_SECTIONS))
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown key (expected {' or '.join(RESOURCE_SECTIONS)})")
    sections: dict[str, dict[str, str]] = {}
    for section in RESOURCE_SECTIONS:
        values = document.get(section) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{where}.{section}: expected a mapping of cpu and/or memory, got {values!r}")
        sections[section] = {}
        for name, value in values.items():
            if name not in RESOURCE_NAMES:
                raise ValueError(f"{where}.{section}.{name}: unknown resource (expected cpu or memory)")
            text = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
            if not isinstance(text, str):
                raise ValueError(f"{where}.{section}.{name}: {value!r} is not a Kubernetes quantity")
            try:
                quantity(text)
            except ValueError as err:
                raise ValueError(f"{where}.{section}.{name}: {err}") from None
            sections[section][name] = text
    for name, request in sections["requests"].items():
        limit = sections["limits"].get(name)
        if limit is not None and quantity(request) > quantity(limit):
            raise ValueError(f"{where}.requests.{name}: {request!r} is more than limits.{name} {limit!r}")
    return PodResources(
        requests=tuple(sorted(sections["requests"].items())), limits=tuple(sorted(sections["limits"].items()))
    )


@dataclass(frozen=True)
class RenderSettings:
    namespace: str = "default"
    # Built by nanoservice/Dockerfile, released to ghcr.io with the chart's appVersion.
    image: str = "ghcr.io/simiankube/nanoservice:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    resources: PodResources = field(default_factory=PodResources)
    termination_grace_seconds: int = 15  # the nanoservice drains in-flight work on SIGTERM
