"""The operator tests' fixtures: a fake API server for unit tests (records every write), the helm binary."""

from __future__ import annotations

import copy
import itertools
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from simiankube.operator.kube import CHILD_KINDS, RESOURCES, KubeError, LiveObject, Payload
from simiankube.operator.status import merge_patch
from simiankube.testing import controlplane

_uids = itertools.count(1)


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """The rig's helm if it is built, else helm on PATH; a skip that names both when neither exists."""
    built = controlplane.bin_dir() / "helm"
    found = built if built.exists() else shutil.which("helm")
    if not found:
        pytest.skip(f"no helm to render the chart: neither {built} (rig/build.sh) nor helm on PATH")
    return Path(found)


def apply_merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = apply_merge_patch(result[key], value)
        else:
            result[key] = value
    return result


class FakeKube:
    """Objects by (kind, namespace, name); writes recorded as (verb, kind, name)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, str]] = []

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj["metadata"].setdefault("uid", f"uid-{next(_uids)}")
        self.objects[(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        return obj

    @staticmethod
    def _matches(obj: dict[str, Any], selector: str) -> bool:
        labels = obj["metadata"].get("labels") or {}
        return all(labels.get(k) == v for k, v in (term.split("=", 1) for term in selector.split(",")))

    async def list_children(self, namespace: str, selector: str, kinds: Sequence[str] = CHILD_KINDS,
                            *, whole: bool = True) -> list[LiveObject]:
        return [
            LiveObject.from_item(kind, copy.deepcopy(obj) if whole else {"metadata": copy.deepcopy(obj["metadata"])},
                                 whole=whole)
            for (kind, ns, name), obj in sorted(self.objects.items())
            if ns == namespace and kind in kinds and (not selector or self._matches(obj, selector))
        ]

    async def list_objects(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (k, ns, _), o in sorted(self.objects.items())
                if k == kind and ns == namespace and self._matches(o, selector)]

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj else None

    async def apply(self, payload: Payload) -> None:
        obj = json.loads(payload.body)
        assert obj["kind"] == payload.kind in RESOURCES
        assert (obj["metadata"]["namespace"], obj["metadata"]["name"]) == (payload.namespace, payload.name)
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        obj["metadata"]["uid"] = self.objects.get(key, {}).get("metadata", {}).get("uid") or f"uid-{next(_uids)}"
        self.objects[key] = obj  # parsed from bytes: nobody else holds it
        self.writes.append(("apply", obj["kind"], obj["metadata"]["name"]))

    async def delete(self, kind: str, namespace: str, name: str, uid: str, grace_seconds: int | None = None) -> bool:
        obj = self.objects.get((kind, namespace, name))
        if obj is None or obj["metadata"]["uid"] != uid:
            return False
        del self.objects[(kind, namespace, name)]
        self.writes.append(("delete", kind, name))
        return True

    async def close(self) -> None:
        pass

    async def evict(self, namespace: str, name: str, uid: str, grace_seconds: int) -> str:
        return "evicted" if await self.delete("Pod", namespace, name, uid, grace_seconds) else "gone"

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        obj = self.objects.get(("Architecture", namespace, name))
        if obj is None:
            raise KubeError(404, f"architectures {name!r} not found")
        obj["status"] = apply_merge_patch(obj.get("status") or {}, patch)
        self.writes.append(("patch", "Architecture/status", name))


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


__all__ = ["FakeKube", "apply_merge_patch", "merge_patch"]
