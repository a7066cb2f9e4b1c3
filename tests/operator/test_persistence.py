"""kopf's diff base as a digest: a change is still a change, a status write is not, and nothing big is stored."""

from __future__ import annotations

import json
from typing import Any

import kopf

from simiankube.operator.handlers import HashDiffBaseStorage


def architecture(services: int, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "simiankube.io/v1alpha1", "kind": "Architecture",
        "metadata": {"name": "big", "namespace": "ns", "uid": "u1", "generation": 1, "labels": {"team": "a"}},
        "spec": {"arch": "big", "services": [{"name": f"s{i}", "package": "karyon", "count": 1}
                                             for i in range(services)]},
        "status": status,
    }


def stored(storage: HashDiffBaseStorage, raw: dict[str, Any]) -> dict[str, Any]:
    """The status after kopf stored the essence of ``raw`` with this storage."""
    body = kopf.Body(raw)  # type: ignore[arg-type]
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    return {**raw["status"], **json.loads(json.dumps(dict(patch)))["status"]}


def test_nothing_stored_is_a_creation_and_the_stored_digest_is_small() -> None:
    storage = HashDiffBaseStorage()
    raw = architecture(1000)
    assert storage.fetch(body=kopf.Body(raw)) is None  # type: ignore[arg-type]
    status = stored(storage, raw)
    assert len(json.dumps(status)) < 100, status


def test_an_unchanged_essence_has_no_diff_and_a_changed_one_has() -> None:
    storage = HashDiffBaseStorage()
    raw = architecture(3)
    raw["status"] = stored(storage, raw)
    body = kopf.Body(raw)  # type: ignore[arg-type]
    assert storage.fetch(body=body) == storage.build(body=body)
    # Status writes (and kopf's own) are not part of the essence: still no diff.
    raw["status"]["readyInstances"] = 3
    assert storage.fetch(body=kopf.Body(raw)) == storage.build(body=kopf.Body(raw))  # type: ignore[arg-type]
    for change in ({"spec": {**raw["spec"], "arch": "other"}},
                   {"metadata": {**raw["metadata"], "labels": {"team": "b"}}}):
        changed = kopf.Body({**raw, **change})  # type: ignore[arg-type]
        assert storage.fetch(body=changed) == {}, change  # an update of everything


def test_the_whole_essence_an_older_operator_stored_is_removed() -> None:
    storage = HashDiffBaseStorage()
    raw = architecture(3, kopf={"last-handled-configuration": json.dumps({"spec": {}})})
    assert storage.fetch(body=kopf.Body(raw)) is None  # type: ignore[arg-type]  # handled once more
    assert stored(storage, raw)["kopf"]["last-handled-configuration"] is None
