"""What the operator remembers between events: workloads seen, status written.

``WorkloadView`` holds this operator's Deployments and StatefulSets as its
own label-selected watches (filtered by the API server) deliver them, so
status and chaos read readiness from memory instead of polling the API
server, and workloads of anyone else never reach the operator.
``StatusKeeper`` is the only writer of Architecture status: one lock per
Architecture, a merge patch of exactly what differs (nothing when nothing
does), and workload events coalesced into at most one write per ``delay``
— and no sooner after a write than that write took: a 1,000-service
Architecture takes the API server seconds to write when it is busy, and
writes back to back would leave kopf's own writes of it retrying on
conflicts until they time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from simiankube import contract
from simiankube.operator.kube import KubeError
from simiankube.operator.reconcile import Owner
from simiankube.operator.status import Status, WorkloadState, merge_patch

Change = Callable[[Mapping[str, Any]], Status]

log = logging.getLogger(__name__)


class WorkloadView:
    """This operator's workloads by owning Architecture uid, kept from list + watch events.

    The controller lists every workload before any handler runs, so a
    restarted operator sees them all before it rebuilds a status: no flap, no write.
    """

    def __init__(self) -> None:
        self._by_owner: dict[str, dict[str, WorkloadState]] = {}  # owner uid → workload uid → state
        self._owner_of: dict[str, str] = {}  # workload uid → owner uid

    def replace(self, kind: str, namespace: str | None, bodies: Iterable[Mapping[str, Any]]) -> None:
        """After a list: exactly these workloads of this kind (in this namespace; None: every namespace)."""
        gone = [uid for states in self._by_owner.values() for uid, state in states.items()
                if state.kind == kind and namespace in (None, state.namespace)]
        for uid in gone:
            self._drop(uid)
        for body in bodies:
            self.update("ADDED", body)

    def update(self, event_type: str, body: Mapping[str, Any]) -> None:
        """One watch event; workloads without an owning Architecture are not kept."""
        state = WorkloadState.from_body(body)
        self._drop(state.uid)
        if event_type != "DELETED" and state.owner_uid:
            self._by_owner.setdefault(state.owner_uid, {})[state.uid] = state
            self._owner_of[state.uid] = state.owner_uid

    def _drop(self, uid: str) -> None:
        owner_uid = self._owner_of.pop(uid, None)
        if owner_uid is not None:
            states = self._by_owner[owner_uid]
            del states[uid]
            if not states:
                del self._by_owner[owner_uid]

    def owned(self, owner: Owner) -> list[WorkloadState]:
        return sorted(self._by_owner.get(owner.uid, {}).values(), key=lambda w: (w.kind, w.name))


class StatusClient(Protocol):
    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None: ...


class StatusKeeper:
    def __init__(self, kube: StatusClient, delay: float) -> None:
        self._kube = kube
        self._delay = delay
        self._known: dict[str, Status] = {}  # by Architecture uid: the status last written or read
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: dict[str, asyncio.Task[None]] = {}  # by Architecture uid: its one refresh task
        self._dirty: set[str] = set()  # Architecture uids with workload events since their refresh read the view
        self._not_before: dict[str, float] = {}  # by Architecture uid: loop time its next refresh may write

    def known(self, owner: Owner) -> Mapping[str, Any]:
        return self._known.get(owner.uid) or {}

    async def update(
        self, owner: Owner, change: Change, current: Mapping[str, Any] | None = None
    ) -> tuple[Mapping[str, Any], Status] | None:
        """Apply ``change`` to the status and write the difference; (before, after), or None if gone.

        ``current`` is the status as a handler saw it, used only when this
        keeper has not written or read the status yet (e.g. after a restart).
        """
        async with self._locks.setdefault(owner.uid, asyncio.Lock()):
            previous = self._known.get(owner.uid)
            if previous is None and current is None:
                body = await self._kube.get(contract.KIND, owner.namespace, owner.name)
                if body is None or body["metadata"].get("uid") != owner.uid:
                    return None
                current = body.get("status") or {}
            if previous is None:
                previous = dict(current or {})
            new = change(previous)
            patch = merge_patch(previous, new)
            if patch:
                began = asyncio.get_running_loop().time()
                try:
                    await self._kube.patch_status(owner.namespace, owner.name, patch)
                except KubeError as err:
                    if err.status != 404:
                        raise
                    self._known.pop(owner.uid, None)  # deleted meanwhile
                    return None
                finally:
                    ended = asyncio.get_running_loop().time()
                    self._not_before[owner.uid] = 2 * ended - began
            self._known[owner.uid] = new
            return previous, new

    def refresh_soon(self, owner: Owner, change: Change,
                     on_change: Callable[[Mapping[str, Any], Status], None]) -> None:
        """Apply ``change`` (a rebuild from the workloads) in ``delay`` seconds, once for a burst of events.

        One refresh per Architecture at a time: events during a write make one
        more write afterwards, from the view as it is then. (A write of a
        1,000-service status can take seconds on a busy API server: queued
        refreshes, each with the view of its own moment, would fall further
        and further behind.)
        """
        self._dirty.add(owner.uid)
        if owner.uid not in self._pending:
            self._pending[owner.uid] = asyncio.create_task(self._refresh(owner, change, on_change))

    async def _refresh(self, owner: Owner, change: Change,
                       on_change: Callable[[Mapping[str, Any], Status], None]) -> None:
        try:
            while owner.uid in self._dirty:
                loop = asyncio.get_running_loop()
                await asyncio.sleep(max(self._delay, self._not_before.get(owner.uid, 0.0) - loop.time()))
                self._dirty.discard(owner.uid)
                try:  # ``change`` reads the view once the lock is held: the newest facts
                    result = await self.update(owner, change)
                except KubeError as err:  # the next workload event tries again
                    log.warning("status of %s/%s not written: %s", owner.namespace, owner.name, err)
                    return
                if result is not None:
                    on_change(*result)
        finally:
            if self._pending.get(owner.uid) is asyncio.current_task():
                del self._pending[owner.uid]

    def forget(self, owner: Owner) -> None:
        self._known.pop(owner.uid, None)
        self._not_before.pop(owner.uid, None)
        self._dirty.discard(owner.uid)
        self._locks.pop(owner.uid, None)
        task = self._pending.pop(owner.uid, None)
        if task:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._pending.values())
        self._pending.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
