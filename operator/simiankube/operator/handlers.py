"""Every kopf handler of the operator: each a guard plus one call.

Importing this module registers the handlers with kopf's default registry;
``simiankube operator`` imports it and runs kopf.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from simiankube import contract
from simiankube.operator.chaos import Sleep
from simiankube.operator.controller import Controller, NotServed, OperatorConfig

ARCHITECTURES = (contract.API_GROUP, contract.API_VERSION, contract.PLURAL)
CHAOS_CANCELLATION_SECONDS = 10.0
VERIFY_CANCELLATION_SECONDS = 10.0
# kopf's diff base, in status.kopf: a digest, and the whole essence kopf's StatusDiffBaseStorage kept.
DIFFBASE_KEY = "lastHandledHash"
OLD_DIFFBASE_KEY = "last-handled-configuration"


def digest(essence: Any) -> str:
    return hashlib.sha256(json.dumps(essence, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def kopf_status(body: kopf.Body) -> Mapping[str, Any]:
    return (body.get("status") or {}).get("kopf") or {}


class HashDiffBaseStorage(kopf.DiffBaseStorage):
    """kopf's diff base as a digest in ``status.kopf.lastHandledHash``, not the last handled spec.

    kopf compares an object's essence (spec, labels, annotations) with the
    last handled one to tell a change from a status write; its own storages
    keep that essence whole: for 1,000 services ~190 kB more in every read,
    watch event and write of an object that the API server decodes and
    re-encodes on each. The handler never reads kopf's diff (it renders the
    whole spec), so a digest decides just as well.

    ``fetch`` answers the current essence when its digest is the stored one
    (no change: nothing to handle), an empty essence when it differs (an
    update of everything) and None when nothing was ever stored (a creation).
    """

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        stored = kopf_status(body).get(DIFFBASE_KEY)
        if stored is None:
            return None
        essence = self.build(body=body)
        return essence if digest(essence) == stored else kopf.BodyEssence()

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        stanza = patch.setdefault("status", {}).setdefault("kopf", {})
        stanza[DIFFBASE_KEY] = digest(essence)
        if OLD_DIFFBASE_KEY in kopf_status(body):  # written by an older operator: dropped once
            stanza[OLD_DIFFBASE_KEY] = None


@kopf.on.startup()
async def on_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: OperatorConfig = memo.config
    settings.scanning.disabled = True  # no cluster-wide CRD/namespace watching: least privilege
    settings.posting.level = logging.WARNING  # Events are posted explicitly, with reasons
    # Only the daemons (chaos, segmentation verification) need one; the name predates the second.
    settings.persistence.finalizer = f"{contract.API_GROUP}/chaos"
    # kopf's bookkeeping all in status.kopf: one write of the status subresource per handled change,
    # and none of the Architecture itself (each write of it re-validates the whole spec).
    settings.persistence.progress_storage = kopf.StatusProgressStorage()
    # A digest of the last handled spec, not the spec (~190 kB for 1,000 services) on every write.
    settings.persistence.diffbase_storage = HashDiffBaseStorage()
    memo.controller = await Controller.start(config)
    memo.controller.hold_lease()
    try:
        await memo.controller.wait_until_served(config.crd_timeout_seconds)
        # Workloads are watched by the controller, filtered by label on the server (kopf filters
        # labels in the client: it would hold every Deployment of the cluster); listed before kopf
        # serves Architectures, so no status is built from a partial view.
        memo.controller.watch_children()
        await memo.controller.wait_until_listed(config.crd_timeout_seconds)
    except NotServed as err:
        raise kopf.PermanentError(str(err)) from err


@kopf.on.cleanup()
async def on_cleanup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    if "controller" in memo:
        await memo.controller.release_finalizers(settings.persistence.finalizer)
        await memo.controller.close()


@kopf.on.resume(*ARCHITECTURES)
@kopf.on.create(*ARCHITECTURES)
@kopf.on.update(*ARCHITECTURES)
async def on_architecture_change(body: kopf.Body, retry: int, memo: kopf.Memo, logger: kopf.Logger,
                                 **_: Any) -> None:
    await memo.controller.reconcile(body, logger, retry=retry)


@kopf.on.event(*ARCHITECTURES)
async def on_architecture_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Remembered for the periodic resync; forgotten when gone (children go by garbage collection).

    A watch event, not ``on.delete``: without a finalizer an Architecture is gone
    before kopf could call a deletion handler.
    """
    memo.controller.architecture_seen(type, body)


def chaos_enabled(spec: kopf.Spec, **_: Any) -> bool:
    return bool((spec.get("chaos") or {}).get("enabled"))


def stoppable_sleep(stopped: kopf.DaemonStopped) -> Sleep:
    """A daemon's sleep: wakes early when kopf stops the daemon, and then says so."""

    async def sleep(seconds: float) -> bool:
        await stopped.wait(seconds)
        return bool(stopped)

    return sleep


@kopf.daemon(*ARCHITECTURES, when=chaos_enabled, cancellation_timeout=CHAOS_CANCELLATION_SECONDS)
async def on_chaos(body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
    await memo.controller.run_chaos(body, stoppable_sleep(stopped))


def verification_enabled(spec: kopf.Spec, memo: kopf.Memo, **_: Any) -> bool:
    if not memo.config.verification:
        return False
    interval = (spec.get("segmentation") or {}).get("verifyIntervalSeconds") or 0
    return isinstance(interval, (int, float)) and interval > 0


@kopf.daemon(*ARCHITECTURES, when=verification_enabled, cancellation_timeout=VERIFY_CANCELLATION_SECONDS)
async def on_segmentation_verify(body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
    await memo.controller.run_verification(body, stoppable_sleep(stopped))
