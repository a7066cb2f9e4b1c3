"""POST /probe: can this instance reach those targets? (for `simiankube verify`)

Each target gets a TCP connect and, on that same connection, an HTTP
GET /healthz, both within the request's timeout. Names resolve through the
nanoservice's own resolver, so a probe sees exactly what a call would.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import asdict, dataclass
from typing import Any

from simiankube import contract
from simiankube.nanoservice.resolver import Resolver

MAX_TARGETS = 2000
CONCURRENCY = 64
DEFAULT_TIMEOUT_MS = 1000.0
MAX_TIMEOUT_MS = 10_000.0


class ProbeRequestError(ValueError):
    """The request body is not a valid probe request (answered 400)."""


@dataclass(frozen=True)
class ProbeTarget:
    name: str
    host: str
    port: int


@dataclass
class ProbeResult:
    name: str
    host: str
    port: int
    connected: bool = False
    http_status: int | None = None
    error: str | None = None
    elapsed_ms: float = 0.0


@dataclass(frozen=True)
class Scope:
    """What a probe may reach: the targets of this architecture, never anything else (no open relay).

    Names: the configured hosts, or a Service of this architecture (`<architecture>-…`, no dots: the own
    namespace). Addresses: private, loopback or shared (100.64/10) ones, as pod IPs are, on the nanoservice
    port — `verify` probes pods by IP, including pods this service has no dependency on."""

    names: frozenset[str]
    architecture: str
    port: int

    def refuses(self, host: str, port: int) -> str | None:
        """Why the target is out of scope, or None."""
        if port != self.port:
            return f"port {port} is not the nanoservice port {self.port}"
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            if host in self.names or (host.startswith(f"{self.architecture}-") and "." not in host):
                return None
            return f"{host!r} is not a host of architecture {self.architecture!r}"
        if address.is_link_local or address.is_unspecified or address.is_multicast:  # metadata services, …
            return f"{host} is not a pod address"
        if address.is_private or address in SHARED_NETWORK:
            return None
        return f"{host} is not a private address"


SHARED_NETWORK = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598: some clusters' pod network


def parse_probe_request(data: Any, scope: Scope) -> tuple[list[ProbeTarget], float]:
    if not isinstance(data, dict):
        raise ProbeRequestError("body: expected a JSON object with 'targets'")
    targets = data.get("targets")
    if not isinstance(targets, list):
        raise ProbeRequestError("targets: expected a list of {name, host, port}")
    if len(targets) > MAX_TARGETS:
        raise ProbeRequestError(f"targets: at most {MAX_TARGETS} per request, got {len(targets)}")
    timeout_ms = data.get("timeout_ms", DEFAULT_TIMEOUT_MS)
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, (int, float)) or not 1 <= timeout_ms <= MAX_TIMEOUT_MS:
        raise ProbeRequestError(f"timeout_ms: expected a number between 1 and {MAX_TIMEOUT_MS:g}, got {timeout_ms!r}")
    parsed = []
    for i, item in enumerate(targets):
        if not isinstance(item, dict):
            raise ProbeRequestError(f"targets[{i}]: expected an object")
        host, port = item.get("host"), item.get("port", contract.HTTP_PORT)
        if not isinstance(host, str) or not host:
            raise ProbeRequestError(f"targets[{i}].host: expected a non-empty string")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ProbeRequestError(f"targets[{i}].port: expected a port number, got {port!r}")
        refused = scope.refuses(host, port)
        if refused is not None:
            raise ProbeRequestError(f"targets[{i}]: {refused}; /probe only reaches targets of this architecture")
        parsed.append(ProbeTarget(str(item.get("name", host)), host, port))
    return parsed, float(timeout_ms)


async def probe_one(resolver: Resolver, target: ProbeTarget, timeout: float) -> ProbeResult:
    result = ProbeResult(target.name, target.host, target.port)
    started = time.monotonic()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            endpoints = await resolver.lookup(target.host, target.port)
            if not endpoints:
                result.error = f"cannot resolve {target.host!r}"
                return result
            endpoint = endpoints[0]
            reader, writer = await asyncio.open_connection(endpoint.address, endpoint.port)
            result.connected = True
            writer.write(
                f"GET {contract.PATH_HEALTH} HTTP/1.1\r\nHost: {target.host}\r\nConnection: close\r\n\r\n".encode()
            )
            line = await reader.readline()
            parts = line.split()
            if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
                result.http_status = int(parts[1])
            else:
                result.error = "no HTTP response"
    except TimeoutError:
        result.error = "timeout" if not result.connected else "timeout waiting for HTTP response"
    except OSError as err:
        result.error = f"{type(err).__name__}: {err.strerror or err}"
    finally:
        result.elapsed_ms = round((time.monotonic() - started) * 1000, 3)
        if writer is not None:
            writer.close()
    return result


async def probe_all(resolver: Resolver, targets: list[ProbeTarget], timeout_ms: float) -> list[dict[str, Any]]:
    """Every target, at most CONCURRENCY at a time, results in request order."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def bounded(target: ProbeTarget) -> ProbeResult:
        async with limit:
            return await probe_one(resolver, target, timeout_ms / 1000.0)

    return [asdict(r) for r in await asyncio.gather(*(bounded(t) for t in targets))]
