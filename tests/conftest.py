"""Shared pytest setup: markers and the real control plane fixture.

``control_plane`` (session scope) builds the rig binaries if they are missing
(rig/build.sh: a cold build takes a long while, see CONTRIBUTING.md), starts
etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on
loopback, and tears everything down at the end of the session, also when the
run is interrupted. Tests that use it are marked ``controlplane``; skip them
in a quick loop with ``pytest -m "not controlplane"``.

``real_node`` (session scope) is a second control plane with a real node
(containerd, kubelet, kube-proxy, CoreDNS, kube-router; the project's images
imported): tests that use it are marked ``realnode`` (and ``controlplane``).
It needs root and is the only real node on the machine while it runs.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from simiankube.testing import controlplane
from simiankube.testing.controlplane import ControlPlane, RigError


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "controlplane: needs the real Kubernetes control plane (slow; builds and starts "
        'the rig). Skip with -m "not controlplane".',
    )
    config.addinivalue_line(
        "markers",
        "realnode: needs the real node (root; containers, iptables; one per machine). "
        'Skip with -m "not realnode".',
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Any test using the rig is a ``controlplane`` test, marked or not."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "control_plane" in fixtures or "rig_binaries" in fixtures:
            item.add_marker(pytest.mark.controlplane)
        if "real_node" in fixtures:
            item.add_marker(pytest.mark.controlplane)
            item.add_marker(pytest.mark.realnode)
    # Tests on the session's real node last: until then the machine's one real
    # node is free for the tests that bring up (and tear down) their own.
    items.sort(key=lambda item: "real_node" in getattr(item, "fixturenames", ()))


def _build_if_missing(
    pytestconfig: pytest.Config, names: tuple[str, ...] = controlplane.BINARIES
) -> None:
    missing = controlplane.missing_binaries(names)
    if not missing:
        return
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(
            f"\n[control_plane] building missing rig binaries ({', '.join(missing)}) "
            "with rig/build.sh; a cold build takes a long while on a small machine",
            file=sys.stderr,
            flush=True,
        )
        try:
            controlplane.build(stdout=sys.stderr)
        except RigError as error:
            pytest.fail(f"building the control plane failed: {error}", pytrace=False)


@pytest.fixture(scope="session")
def rig_binaries(pytestconfig: pytest.Config) -> Path:
    """The directory of the rig binaries, built first if any is missing."""
    _build_if_missing(pytestconfig)
    return controlplane.bin_dir()


@pytest.fixture(scope="session")
def control_plane(
    rig_binaries: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """A running control plane shared by the whole session.

    Yields the :class:`ControlPlane`: ``.kubeconfig`` (admin), ``.server``,
    ``.ca_file``, ``.binary(name)``, ``.kubectl(*args)``, ``.api(...)``,
    ``.create_token(ns, sa)``, ``.kubeconfig_for_token(token, path)``.
    """
    workdir = tmp_path_factory.mktemp("controlplane")
    rig = ControlPlane(workdir)
    start_rig(rig)
    try:
        yield rig
    finally:
        rig.stop()


def start_rig(rig: ControlPlane) -> None:
    """Start ``rig``; a failure fails the test (with the components' log tails)."""
    try:
        rig.start()
    except RigError as error:
        pytest.fail(f"the control plane did not start: {error}", pytrace=False)


@pytest.fixture(scope="session")
def real_node(
    pytestconfig: pytest.Config, rig_binaries: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """A control plane with a real node, shared by the session (see the module docstring).

    Yields the :class:`ControlPlane` (``.node`` is its :class:`RealNode`); pods
    run for real, Services and DNS work, NetworkPolicies are enforced.
    """
    _build_if_missing(pytestconfig, controlplane.NODE_BINARIES)
    rig = ControlPlane(tmp_path_factory.mktemp("realnode"), real_node=True)
    start_rig(rig)
    try:
        yield rig
    finally:
        rig.stop()
