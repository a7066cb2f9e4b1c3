"""Leader election over a coordination.k8s.io Lease: several replicas, one of them reconciling.

Before kopf starts, a replica waits until it holds the Lease (answering its
health endpoint meanwhile, so a standby is not restarted as dead); the
leader renews it every ``renew_seconds`` and exits at once when it could not
renew for ``deadline_seconds`` — well before the Lease expires for the others
(``duration_seconds``) — so two replicas never reconcile or kill at the same
time. The decision is a pure function of the Lease, the identity and the clock.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web

from simiankube.operator.kube import KubeError

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class LeaseTerms:
    namespace: str
    name: str
    identity: str
    duration_seconds: int = 15  # the others wait this long after the last renewal
    renew_seconds: float = 4.0
    deadline_seconds: float = 10.0  # a leader that could not renew this long exits (< duration)
    retry_seconds: float = 2.0  # a standby looks again this often


class LeaseClient(Protocol):
    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def write_lease(self, lease: dict[str, Any]) -> None: ...


def micro_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def claim(lease: Mapping[str, Any] | None, terms: LeaseTerms, now: datetime) -> dict[str, Any] | None:
    """The Lease to write to hold it now, or None while another holder's term runs.

    Free, expired or already ours: ours (renewed). The write carries the read
    resourceVersion, so of two replicas claiming at once only one succeeds.
    """
    spec: Mapping[str, Any] = (lease or {}).get("spec") or {}
    holder = spec.get("holderIdentity") or ""
    renewed = parse_micro_time(spec.get("renewTime"))
    duration = int(spec.get("leaseDurationSeconds") or terms.duration_seconds)
    if holder and holder != terms.identity and renewed is not None and now < renewed + timedelta(seconds=duration):
        return None
    taking_over = holder != terms.identity
    metadata: dict[str, Any] = {"name": terms.name, "namespace": terms.namespace}
    if lease is not None:
        metadata["resourceVersion"] = lease["metadata"]["resourceVersion"]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": terms.identity,
            "leaseDurationSeconds": terms.duration_seconds,
            "acquireTime": micro_time(now) if taking_over else spec.get("acquireTime") or micro_time(now),
            "renewTime": micro_time(now),
            "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (1 if taking_over and holder else 0),
        },
    }


async def try_hold(kube: LeaseClient, terms: LeaseTerms, clock: Clock) -> bool:
    """One attempt to take or renew the Lease; False when someone else holds it or won the race."""
    lease = await kube.get_lease(terms.namespace, terms.name)
    wanted = claim(lease, terms, clock())
    if wanted is None:
        return False
    try:
        await kube.write_lease(wanted)
    except KubeError as err:
        if err.status == 409:  # another replica wrote first
            return False
        raise
    return True


async def acquire(kube: LeaseClient, terms: LeaseTerms, clock: Clock, liveness: str = "") -> None:
    """Wait until this replica holds the Lease; answer the liveness URL meanwhile (a standby is alive)."""
    runner = await _serve_standby_health(liveness) if liveness else None
    logged = False
    try:
        while True:
            try:
                if await try_hold(kube, terms, clock):
                    log.info("leading: holding lease %s/%s as %s", terms.namespace, terms.name, terms.identity)
                    return
            except KubeError as err:
                log.warning("lease %s/%s not readable: %s", terms.namespace, terms.name, err)
            if not logged:
                log.info("waiting to lead: lease %s/%s is held by another replica", terms.namespace, terms.name)
                logged = True
            await asyncio.sleep(terms.retry_seconds)
    finally:
        if runner is not None:
            await runner.cleanup()


async def keep(kube: LeaseClient, terms: LeaseTerms, clock: Clock,
               lost: Callable[[], None] = lambda: os._exit(1)) -> None:
    """Renew the Lease for as long as this runs; call ``lost`` (exit) when it cannot for the deadline."""
    last = asyncio.get_running_loop().time()
    while True:
        await asyncio.sleep(terms.renew_seconds)
        try:
            held = await try_hold(kube, terms, clock)
        except KubeError as err:
            held = False
            log.warning("lease %s/%s not renewed: %s", terms.namespace, terms.name, err)
        now = asyncio.get_running_loop().time()
        if held:
            last = now
        elif not held and (now - last >= terms.deadline_seconds or await _taken(kube, terms)):
            log.error("lost the lease %s/%s: exiting so that another replica leads", terms.namespace, terms.name)
            lost()
            return


async def release(kube: LeaseClient, terms: LeaseTerms) -> None:
    """On a clean shutdown: give the Lease up, so a standby leads at once instead of after its term."""
    lease = await kube.get_lease(terms.namespace, terms.name)
    spec = (lease or {}).get("spec") or {}
    if lease is None or spec.get("holderIdentity") != terms.identity:
        return
    await kube.write_lease({**lease, "spec": {**spec, "holderIdentity": ""}})


async def _taken(kube: LeaseClient, terms: LeaseTerms) -> bool:
    try:
        lease = await kube.get_lease(terms.namespace, terms.name)
    except KubeError:
        return False
    return ((lease or {}).get("spec") or {}).get("holderIdentity") not in (None, "", terms.identity)


async def _serve_standby_health(liveness: str) -> web.AppRunner:
    url = urlsplit(liveness)

    async def healthy(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    app = web.Application()
    app.router.add_get(url.path or "/", healthy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, url.hostname or "0.0.0.0", url.port or 80).start()
    return runner
