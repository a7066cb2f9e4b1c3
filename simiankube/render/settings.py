"""Settings of the render step, passed in explicitly (never read from globals)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RenderSettings:
    namespace: str = "default"
    # Built by nanoservice/Dockerfile, released to ghcr.io with the chart's appVersion.
    image: str = "ghcr.io/simiankube/nanoservice:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    # Small enough that netflixoss (65 pods) fits on one kind node.
    cpu_request: str = "10m"
    memory_request: str = "40Mi"
    memory_limit: str = "128Mi"
    termination_grace_seconds: int = 15  # the nanoservice drains in-flight work on SIGTERM
