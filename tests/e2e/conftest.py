"""The mission end to end on the real node, as a user runs it on kind.

``chart`` installs helm/simiankube with its defaults (the operator image the
real node imported) and uninstalls it at the end, checking nothing is left
stuck; ``restricted`` is a fresh namespace enforcing Pod Security
``restricted`` for the architectures.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from simiankube.testing.controlplane import ControlPlane
from simiankube.testing.kube import Kube
from simiankube.testing.wait import wait_for
from tests.e2e.support import NANOSERVICE_CPU_REQUEST, RELEASE, RELEASE_NAMESPACE, helm

_counter = itertools.count()


@pytest.fixture(scope="session")
def chart(real_node: ControlPlane) -> Iterator[ControlPlane]:
    """helm/simiankube installed with its defaults but chaos on (the chart's default is dry-run, as a user
    opts in); uninstalled (and checked) at the end."""
    helm(real_node, "install", RELEASE, "helm/simiankube", "-n", RELEASE_NAMESPACE, "--create-namespace",
         "--set", "chaos.mode=on", "--set", f"nanoservice.resources.requests.cpu={NANOSERVICE_CPU_REQUEST}",
         "--wait", "--timeout", "5m")  # fmt: skip
    yield real_node
    helm(real_node, "uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait", "--timeout", "3m")

    def left() -> list[str]:
        return real_node.kubectl("get", "all", "-n", RELEASE_NAMESPACE, "-o", "name").stdout.split()

    wait_for(lambda: left() == [], 120, interval=1, message="nothing of the release left")


@pytest.fixture
def restricted(chart: ControlPlane, request: pytest.FixtureRequest) -> Iterator[Kube]:
    name = f"e2e-{next(_counter)}"
    chart.kubectl("create", "namespace", name)
    chart.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    yield Kube(chart, name)
    # Gone before the next test: a node still tearing down a migration's 160 pods starts
    # nothing else for minutes (the real-node tests after these timed out on a pod start).
    chart.kubectl("delete", "namespace", name, "--timeout=600s", check=False, timeout=660)
