"""Name resolution: Kubernetes DNS in pods, a hosts table in local mode.

On Kubernetes the configured names are Services in the pod's namespace; the
headless `peers_host` resolves to every ready pod, so re-resolving every few
seconds is the registry's delta polling. Zones are unknown there ("").

In local mode the runner writes a hosts table (env SIMIANKUBE_HOSTS):
`{"hosts": {name: [{"address": "127.1.0.5", "zone": "zoneA", "instance":
"lamp-webserver-us-east-1-4"}, ...]}}`. Every instance has its own loopback
address and the configured port, exactly like a pod, so zone preference,
retries on a different instance and ejection behave the same in both modes.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from simiankube.nanoservice.policy import Endpoint

REFRESH_SECONDS = 5.0

HostsTable = dict[str, tuple[Endpoint, ...]]


@dataclass(frozen=True)
class HostEntry:
    """One row of the local hosts table."""

    address: str
    zone: str
    instance: str


def hosts_table_json(table: dict[str, list[HostEntry]]) -> str:
    """The document the runner writes and `load_hosts_table` reads."""
    rows = {host: [e.__dict__ for e in entries] for host, entries in sorted(table.items())}
    return json.dumps({"hosts": rows}, sort_keys=True, indent=1)


def load_hosts_table(path: str | Path, port: int) -> HostsTable:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {
        host: tuple(Endpoint(e["address"], port, e.get("zone", ""), e.get("instance", e["address"])) for e in rows)
        for host, rows in data["hosts"].items()
    }


# The name does not exist (a headless Service with no ready pod): the answer is "nobody". Every other failure
# (EAI_AGAIN: a timed-out or SERVFAIL lookup) says nothing about the instances and keeps the last answer.
NO_SUCH_NAME = frozenset(getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, name))


class Resolver:
    """host → endpoints, from the hosts table when present, else DNS (cached, refreshed)."""

    def __init__(self, table: HostsTable | None = None) -> None:
        self.table = table
        self._cache: dict[tuple[str, int], tuple[Endpoint, ...]] = {}
        self._table_cache: dict[tuple[str, int], tuple[Endpoint, ...]] = {}  # the table never changes
        # Counts changed answers: what was built from `cached` answers is still good while it stays the same
        # (one comparison per call instead of one lookup per target).
        self.version = 0

    def cached(self, host: str, port: int) -> tuple[Endpoint, ...]:
        """What the last resolution found; never blocks the request path."""
        if self.table is not None and host in self.table:
            found = self._table_cache.get((host, port))
            if found is None:
                found = tuple(e if e.port == port else Endpoint(e.address, port, e.zone, e.instance)
                              for e in self.table[host])
                self._table_cache[(host, port)] = found
            return found
        return self._cache.get((host, port), ())

    async def lookup(self, host: str, port: int) -> tuple[Endpoint, ...] | None:
        """Resolve now without remembering it (probes: names chosen by the caller must not grow the cache);
        None when the lookup failed without saying whether the name exists."""
        if self.table is not None and host in self.table:
            return self.cached(host, port)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as err:
            return () if err.errno in NO_SUCH_NAME else None
        except UnicodeError:
            return ()
        return tuple(Endpoint(a, port, "", a) for a in sorted({str(info[4][0]) for info in infos}))

    async def resolve(self, host: str, port: int) -> tuple[Endpoint, ...]:
        """Resolve now and remember it for `cached`; a transient failure keeps the last good answer."""
        found = await self.lookup(host, port)
        known = self._cache.get((host, port))
        if found is None:
            return known or ()
        if found == known and known is not None:
            return known  # the same answer keeps its identity: nothing built from it is stale
        self._cache[(host, port)] = found
        self.version += 1
        return found

    async def refresh(self, names: Iterable[tuple[str, int]]) -> None:
        await asyncio.gather(*(self.resolve(h, p) for h, p in names))

    async def refresh_forever(self, names: Iterable[tuple[str, int]], interval: float = REFRESH_SECONDS) -> None:
        names = list(names)
        while True:
            await self.refresh(names)
            await asyncio.sleep(interval)
