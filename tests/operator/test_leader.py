"""Leader election: who may hold the Lease, races, and a leader that loses it stops."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

from simiankube.operator.kube import KubeError
from simiankube.operator.leader import LeaseTerms, claim, keep, micro_time, release, try_hold

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
TERMS = LeaseTerms("system", "simiankube", "me", renew_seconds=0.01, deadline_seconds=0.05)


def lease(holder: str, renewed: datetime, transitions: int = 0) -> dict[str, Any]:
    return {"metadata": {"name": "simiankube", "namespace": "system", "resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "acquireTime": micro_time(renewed),
                     "renewTime": micro_time(renewed), "leaseTransitions": transitions}}


def test_a_free_lease_is_taken() -> None:
    taken = claim(None, TERMS, NOW)
    assert taken is not None and "resourceVersion" not in taken["metadata"]
    assert taken["spec"]["holderIdentity"] == "me" and taken["spec"]["leaseTransitions"] == 0


def test_another_holders_term_is_respected_until_it_expires() -> None:
    assert claim(lease("you", NOW - timedelta(seconds=14)), TERMS, NOW) is None
    taken = claim(lease("you", NOW - timedelta(seconds=16), transitions=2), TERMS, NOW)
    assert taken is not None and taken["spec"]["holderIdentity"] == "me"
    assert taken["metadata"]["resourceVersion"] == "7", "the write loses a race instead of overwriting"
    assert taken["spec"]["leaseTransitions"] == 3 and taken["spec"]["acquireTime"] == micro_time(NOW)


def test_the_holder_renews_and_keeps_its_acquire_time() -> None:
    renewed = claim(lease("me", NOW - timedelta(seconds=4)), TERMS, NOW)
    assert renewed is not None
    assert renewed["spec"]["renewTime"] == micro_time(NOW)
    assert renewed["spec"]["acquireTime"] == micro_time(NOW - timedelta(seconds=4))
    assert renewed["spec"]["leaseTransitions"] == 0


class Leases:
    def __init__(self, current: dict[str, Any] | None, conflict: bool = False) -> None:
        self.current = current
        self.conflict = conflict
        self.written: list[dict[str, Any]] = []

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.current

    async def write_lease(self, lease: dict[str, Any]) -> None:
        if self.conflict:
            raise KubeError(409, "the object has been modified")
        self.written.append(lease)


async def test_of_two_claims_at_once_the_loser_does_not_lead() -> None:
    assert not await try_hold(Leases(None, conflict=True), TERMS, lambda: NOW)
    leases = Leases(None)
    assert await try_hold(leases, TERMS, lambda: NOW) and leases.written[0]["spec"]["holderIdentity"] == "me"


async def test_a_leader_whose_lease_was_taken_stops() -> None:
    lost: list[bool] = []
    leases = Leases(lease("you", datetime.now(timezone.utc)))
    await asyncio.wait_for(keep(leases, TERMS, lambda: datetime.now(timezone.utc), lambda: lost.append(True)), 5)
    assert lost == [True] and leases.written == []


async def test_a_clean_shutdown_gives_the_lease_up() -> None:
    leases = Leases(lease("me", NOW))
    await release(leases, TERMS)
    assert leases.written[0]["spec"]["holderIdentity"] == ""
    assert claim(leases.written[0], LeaseTerms("system", "simiankube", "you"), NOW) is not None
    others = Leases(lease("you", NOW))
    await release(others, TERMS)
    assert others.written == [], "never someone else's"
