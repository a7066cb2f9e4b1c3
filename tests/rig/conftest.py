"""Fixtures for the rig tests: a fresh namespace per test."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest

from simiankube.testing.controlplane import ControlPlane
from simiankube.testing.kube import Kube

_counter = itertools.count()


@pytest.fixture
def kube(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[Kube]:
    """kubectl helpers bound to a fresh namespace (deleted afterwards, without waiting)."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    namespace = f"{base}-{next(_counter)}"
    control_plane.kubectl("create", "namespace", namespace)
    yield Kube(control_plane, namespace)
    control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
