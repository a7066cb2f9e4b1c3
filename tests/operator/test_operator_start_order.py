"""How the operator starts: before its CRD (it serves Architectures once established, or exits 1), and
as two replicas (one leads over a Lease; the other takes over when it dies).

These tests delete the CRD of the session's control plane (clearing finalizers
of Architectures another module's operator may have left) and install it again
afterwards, so they own the CRD for their duration.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from simiankube import contract
from simiankube.testing.operator import CRD, OperatorProcess, install_crd, install_operator_identity
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

        try:
            wait_ready(control_plane, generation=1)
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


def test_two_replicas_one_leads_and_the_other_takes_over(
    control_plane: ControlPlane, identity: Path, tmp_path: Path
) -> None:
    """Only the Lease holder reconciles; when it dies the standby leads within the Lease's term."""
    lease = f"--leader-election={SYSTEM}/sk-leader"
    first = OperatorProcess(identity, [WATCHED], tmp_path / "first.log", extra_args=[lease])
    second = OperatorProcess(identity, [WATCHED], tmp_path / "second.log", extra_args=[lease])

    def log(process: OperatorProcess) -> str:
        return process.log_tail(100_000)

    try:
        first.start()
        wait_for(lambda: "leading: holding lease" in log(first), 60, message="the first replica leading")
        second.start()  # healthy as a standby
        wait_for(lambda: "waiting to lead" in log(second), 60, message="the second replica waiting")
        body = json.loads(json.dumps(ARCHITECTURE))
        control_plane.kubectl("-n", WATCHED, "apply", "-f", "-", input=json.dumps(body))
        wait_ready(control_plane, generation=1)
        assert "applied" in log(first) and "applied" not in log(second)
        assert "leading" not in log(second)

        first.kill()
        wait_for(lambda: "leading: holding lease" in log(second), 60, message="the standby taking over")
        body["spec"]["services"][0]["count"] = 2
        control_plane.kubectl("-n", WATCHED, "apply", "-f", "-", input=json.dumps(body))
        wait_ready(control_plane, generation=2)
        assert "applied" in log(second)
    finally:
        control_plane.kubectl("-n", WATCHED, "delete", CRD_NAME, "early", "--wait=true", "--timeout=60s",
                              check=False)
        first.stop()
        second.stop()


def wait_ready(control_plane: ControlPlane, generation: int) -> None:
    def ready() -> bool:
        arch = json.loads(control_plane.kubectl("-n", WATCHED, "get", CRD_NAME, "early", "-o", "json").stdout)
        status = arch.get("status") or {}
        return status.get("observedGeneration") == generation == arch["metadata"]["generation"] and any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])

    wait_for(ready, 180, interval=0.5, message=f"generation {generation} Ready")


def test_an_operator_stopped_first_leaves_nothing_stuck_terminating(
    control_plane: ControlPlane, identity: Path, tmp_path: Path
) -> None:
    """`helm uninstall` before deleting Architectures: the chaos daemon's finalizer is released on shutdown."""
    body = json.loads(json.dumps(ARCHITECTURE))
    body["metadata"]["name"] = "late"
    body["spec"].update(arch="late", victim="web", chaos={"enabled": True, "dryRun": True})
    process = OperatorProcess(identity, [WATCHED], tmp_path / "operator.log")
    process.start()
    try:
        control_plane.kubectl("-n", WATCHED, "apply", "-f", "-", input=json.dumps(body))

        def finalizers() -> list[str]:
            arch = json.loads(control_plane.kubectl("-n", WATCHED, "get", CRD_NAME, "late", "-o", "json").stdout)
            return list(arch["metadata"].get("finalizers") or [])

        wait_for(lambda: f"{contract.API_GROUP}/chaos" in finalizers(), 60, message="the chaos daemon's finalizer")
    finally:
        process.stop()
    assert finalizers() == []
    control_plane.kubectl("-n", WATCHED, "delete", CRD_NAME, "late", "--wait=true", "--timeout=30s")


def test_crd_upgrade_keeps_architectures_and_serves_new_fields(
    control_plane: ControlPlane, identity: Path, without_crd: None  # identity: the namespaces exist
) -> None:
    """The documented upgrade (Helm never upgrades crds/): `kubectl apply --server-side` of the new CRD."""
    old = yaml.safe_load(CRD.read_text())
    del old["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["traffic"]
    control_plane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(old))
    wait_for(lambda: control_plane.kubectl("get", CRD_NAME, "-A", check=False).returncode == 0, 60,
             message="the old CRD served")
    kept = json.loads(json.dumps(ARCHITECTURE))
    kept["metadata"]["name"] = kept["spec"]["arch"] = "kept"
    control_plane.kubectl("-n", WATCHED, "apply", "-f", "-", input=json.dumps(kept))
    uid = json.loads(control_plane.kubectl("-n", WATCHED, "get", CRD_NAME, "kept", "-o", "json").stdout)[
        "metadata"]["uid"]
    kept["spec"]["traffic"] = {"intervalMs": 50}
    refused = control_plane.kubectl("-n", WATCHED, "apply", "--validate=strict", "-f", "-",
                                    input=json.dumps(kept), check=False)
    assert refused.returncode != 0 and "traffic" in refused.stderr

    install_crd(control_plane)  # kubectl apply --server-side --force-conflicts -f crds/architecture.yaml
    control_plane.kubectl("-n", WATCHED, "apply", "--validate=strict", "-f", "-", input=json.dumps(kept))
    after = json.loads(control_plane.kubectl("-n", WATCHED, "get", CRD_NAME, "kept", "-o", "json").stdout)
    assert after["metadata"]["uid"] == uid and after["spec"]["traffic"] == {"intervalMs": 50}
    control_plane.kubectl("-n", WATCHED, "delete", CRD_NAME, "kept")
