"""Run the real operator against a control plane, as its chart would: for tests and benchmarks.

``install_operator_identity`` renders the Helm chart, applies only its
ServiceAccount and RBAC, and returns a kubeconfig holding that
ServiceAccount's token, so the operator runs with exactly the chart's
permissions. ``OperatorProcess`` runs ``simiankube operator`` as a
subprocess (killable with SIGKILL mid-reconcile) and reads its metrics.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from simiankube.testing.controlplane import ControlPlane, free_port
from simiankube.testing.wait import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]  # simiankube/testing/operator.py
CHART = REPO_ROOT / "helm" / "simiankube"
CRD = REPO_ROOT / "crds" / "architecture.yaml"
RELEASE = "sk"
SERVICE_ACCOUNT = f"{RELEASE}-simiankube"  # the chart's fullname for this release
IDENTITY_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")


def install_crd(cp: ControlPlane) -> None:
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))

    def established() -> bool:
        # Polled, not `kubectl wait`: that fails outright while the new CRD has no conditions yet.
        crd = json.loads(cp.kubectl("get", "crd", "architectures.simiankube.io", "-o", "json").stdout)
        return any(c["type"] == "Established" and c["status"] == "True"
                   for c in (crd.get("status") or {}).get("conditions") or [])

    wait_for(established, 60, interval=0.2, message="the CRD Established")


def render_chart(cp: ControlPlane, namespace: str, *values: str) -> list[dict[str, Any]]:
    sets = [arg for value in values for arg in ("--set", value)]
    result = subprocess.run(
        [str(cp.binary("helm")), "template", RELEASE, str(CHART), "--namespace", namespace, *sets],
        capture_output=True, text=True, check=True, timeout=120,
    )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def install_operator_identity(cp: ControlPlane, system_namespace: str, watched: Sequence[str],
                              workdir: Path) -> Path:
    """Apply the chart's ServiceAccount and RBAC; return a kubeconfig with its token."""
    values = [f"watchNamespaces={{{','.join(watched)}}}"] if watched else []
    docs = [d for d in render_chart(cp, system_namespace, *values) if d["kind"] in IDENTITY_KINDS]
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    cp.kubectl("apply", "-f", "-", input=body)
    token = cp.create_token(system_namespace, SERVICE_ACCOUNT, duration="6h")
    return cp.kubeconfig_for_token(token, workdir / "operator.kubeconfig")


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@dataclass
class OperatorProcess:
    """``simiankube operator`` in a subprocess, with its own metrics and health ports."""

    kubeconfig: Path
    namespaces: Sequence[str]
    log_path: Path
    image: str = "simiankube/nanoservice:test"
    extra_args: Sequence[str] = ()
    metrics_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def argv(self) -> list[str]:
        scope = [f"--namespace={ns}" for ns in self.namespaces] or ["--all-namespaces"]
        return [sys.executable, "-m", "simiankube.cli", "operator", *scope,
                f"--metrics-port={self.metrics_port}",
                f"--liveness=http://127.0.0.1:{self.health_port}/healthz",
                f"--nanoservice-image={self.image}", *self.extra_args]

    def start(self, timeout: float = 60.0, *, wait: bool = True) -> None:
        """Start the process; with ``wait``, return once its health endpoint answers."""
        self._log = self.log_path.open("ab")
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        self.process = subprocess.Popen(self.argv(), env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        if wait:
            self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        wait_for(self._healthy, timeout, interval=0.2, message="the operator's health endpoint")

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"the operator exited {self.process.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finishing of what it was doing."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._log:
            self._log.close()
            self._log = None

    def restart(self, extra_args: Sequence[str] | None = None) -> None:
        self.stop()
        if extra_args is not None:
            self.extra_args = extra_args
        self.start()

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return metric_samples(response.read().decode())

    def total(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(value for (sample, have), value in self.metrics().items()
                   if sample == name and wanted <= have)

    def writes(self) -> float:
        return self.total("simiankube_operator_api_writes_total")

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
