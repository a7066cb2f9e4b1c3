"""The operator started before its CRD: it serves Architectures once the CRD is established, or exits 1.

These tests delete the CRD of the session's control plane (clearing finalizers
of Architectures another module's operator may have left) and install it again
afterwards, so they own the CRD for their duration.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from simiankube import contract
from simiankube.operator.testing import CRD, OperatorProcess, install_crd, install_operator_identity
from simiankube.testing.controlplane import ControlPlane
from simiankube.testing.wait import wait_for

SYSTEM = "sk-start-system"
WATCHED = "sk-start"
CRD_NAME = f"{contract.PLURAL}.{contract.API_GROUP}"
ARCHITECTURE = {
    "apiVersion": f"{contract.API_GROUP}/{contract.API_VERSION}",
    "kind": contract.KIND,
    "metadata": {"name": "early"},
    "spec": {"arch": "early", "services": [
        {"name": "web", "package": "karyon", "count": 1, "dependencies": ["db"]},
        {"name": "db", "package": "store", "count": 1},
    ]},
}


def remove_crd(cp: ControlPlane) -> None:
    listed = cp.kubectl("get", CRD_NAME, "-A", "-o", "json", check=False)
    for item in json.loads(listed.stdout or '{"items": []}')["items"] if listed.returncode == 0 else []:
        meta = item["metadata"]
        cp.kubectl("-n", meta["namespace"], "patch", CRD_NAME, meta["name"], "--type=merge",
                   "-p", '{"metadata": {"finalizers": null}}', check=False)
    cp.kubectl("delete", "-f", str(CRD), "--ignore-not-found", "--wait=true", "--timeout=120s")
    wait_for(lambda: cp.kubectl("get", "crd", CRD_NAME, check=False).returncode != 0, 60,
             message="the CRD gone")


@pytest.fixture(scope="module")
def identity(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    for namespace in (SYSTEM, WATCHED):
        control_plane.kubectl("create", "namespace", namespace)
    return install_operator_identity(control_plane, SYSTEM, [WATCHED], tmp_path_factory.mktemp("start-order"))


@pytest.fixture
def without_crd(control_plane: ControlPlane) -> Iterator[None]:
    remove_crd(control_plane)
    try:
        yield
    finally:
        install_crd(control_plane)


def operator_process(identity: Path, tmp_path: Path, *extra: str) -> Iterator[OperatorProcess]:
    process = OperatorProcess(identity, [WATCHED], tmp_path / "operator.log", extra_args=extra)
    process.start(wait=False)
    try:
        yield process
    finally:
        process.stop()
        print(f"\n--- operator log (tail) ---\n{process.log_tail(30)}")


def test_started_before_the_crd_it_serves_architectures_once_established(
    control_plane: ControlPlane, identity: Path, without_crd: None, tmp_path: Path
) -> None:
    for process in operator_process(identity, tmp_path, "--crd-timeout=180"):
        wait_for(lambda: "waiting for the CRD" in process.log_tail(), 60, message="the operator waiting for its CRD")
        assert process.process is not None and process.process.poll() is None
        install_crd(control_plane)
        process.wait_healthy(60)
        control_plane.kubectl("-n", WATCHED, "apply", "-f", "-", input=json.dumps(ARCHITECTURE))

        def ready() -> bool:
            arch = json.loads(control_plane.kubectl("-n", WATCHED, "get", CRD_NAME, "early", "-o", "json").stdout)
            status = arch.get("status") or {}
            return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []) \
                and status.get("observedGeneration") == arch["metadata"]["generation"]

        try:
            wait_for(ready, 180, interval=0.5, message="the Architecture Ready")
        finally:
            control_plane.kubectl("-n", WATCHED, "delete", CRD_NAME, "early", "--wait=true", "--timeout=60s",
                                  check=False)


def test_without_the_crd_it_exits_non_zero_with_the_reason(
    identity: Path, without_crd: None, tmp_path: Path
) -> None:
    for process in operator_process(identity, tmp_path, "--crd-timeout=3"):
        assert process.process is not None
        assert process.process.wait(timeout=60) == 1
        log = process.log_tail()
        assert f"simiankube operator: the CRD {CRD_NAME} is not served" in log
        assert "install crds/architecture.yaml" in log
