"""A real Kubernetes control plane for tests, started by the tests themselves.

Like controller-runtime's envtest, plus the controllers that make workloads
produce pods and simulated nodes (kwok) that make those pods Running:

    etcd -> kube-apiserver (TLS, RBAC, ServiceAccount tokens, PodSecurity)
         -> kube-controller-manager, kube-scheduler, kwok (3 fake nodes)

Everything listens on 127.0.0.1 on free ports; every file lives under one
work directory. The binaries are built from upstream Go modules by
``rig/build.sh`` (versions pinned in ``rig/versions.env``) and cached under
``${SIMIANKUBE_CACHE:-~/.cache/simiankube}/bin/<k8s-version>/``.

Library use::

    with ControlPlane(tmp_path / "rig") as cp:
        cp.kubectl("get", "nodes")

Command line (for people)::

    python -m simiankube.testing.controlplane build
    python -m simiankube.testing.controlplane up DIR     # detached, returns when ready
    python -m simiankube.testing.controlplane down DIR
    python -m simiankube.testing.controlplane run DIR    # foreground, Ctrl-C stops

Pod IPs, node IPs and Service IPs are fake; nodes report 127.0.0.1, so the
only traffic this rig ever sends stays on loopback.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from simiankube.testing.wait import WaitTimeout, wait_for

# --------------------------------------------------------------------------
# Locating the rig, its pinned versions and the cached binaries
# --------------------------------------------------------------------------

#: Root of the source checkout (this file is simiankube/testing/controlplane.py).
REPO_ROOT: Final = Path(__file__).resolve().parents[2]

#: Every binary rig/build.sh produces.
BINARIES: Final = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)

#: Binaries the control plane itself runs (helm is only for tests that use it).
CONTROL_PLANE_BINARIES: Final = BINARIES[:-1]

#: Name of the state file written into the work directory.
STATE_FILE: Final = "state.json"

#: Fake nodes kwok manages: (name, zone). Region is ``rig`` for all.
NODES: Final = (("kwok-node-a", "a"), ("kwok-node-b", "b"), ("kwok-node-c", "c"))
#: Label kwok selects the nodes it manages by.
KWOK_NODE_LABEL: Final = ("type", "kwok")
#: Capacity of every fake node: large enough that tests never run out.
NODE_CAPACITY: Final = {"cpu": "32", "memory": "256Gi", "pods": "1000"}

SERVICE_CLUSTER_IP_RANGE: Final = "10.96.0.0/16"
POD_CIDR: Final = "10.244.0.1/16"
SERVICE_ACCOUNT_ISSUER: Final = "https://kubernetes.default.svc.cluster.local"

#: Items the rig creates inside its work directory (and removes on stop).
_WORKDIR_ITEMS: Final = (STATE_FILE, "kubeconfig", "pki", "config", "etcd-data", "logs", "run")


class RigError(RuntimeError):
    """The control plane could not be built, started or stopped."""


class BinaryMissingError(RigError):
    """A rig binary has not been built yet."""


def rig_dir() -> Path:
    """Directory holding ``build.sh`` and ``versions.env`` ($SIMIANKUBE_RIG overrides)."""
    return Path(os.environ.get("SIMIANKUBE_RIG", REPO_ROOT / "rig"))


def versions() -> dict[str, str]:
    """The pinned versions from ``rig/versions.env`` (``KEY=VALUE`` lines)."""
    path = rig_dir() / "versions.env"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RigError(f"{path} not found: set SIMIANKUBE_RIG to the rig/ directory") from None
    pins: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            pins[key.strip()] = value.strip().strip('"')
    return pins


def cache_root() -> Path:
    """Cache root: $SIMIANKUBE_CACHE, default ``~/.cache/simiankube``."""
    env = os.environ.get("SIMIANKUBE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "simiankube"


def bin_dir() -> Path:
    """Directory of the cached binaries for the pinned Kubernetes version."""
    return cache_root() / "bin" / versions()["K8S_VERSION"]


#: Where each binary comes from: (Go package, versions.env key). rig/build.sh
#: writes ``<name>.version`` = ``<package>@<version>`` next to each binary.
_SOURCES: Final = {
    "etcd": ("go.etcd.io/etcd/server/v3", "ETCD_VERSION"),
    "kube-apiserver": ("k8s.io/kubernetes/cmd/kube-apiserver", "K8S_VERSION"),
    "kube-controller-manager": ("k8s.io/kubernetes/cmd/kube-controller-manager", "K8S_VERSION"),
    "kube-scheduler": ("k8s.io/kubernetes/cmd/kube-scheduler", "K8S_VERSION"),
    "kubectl": ("k8s.io/kubernetes/cmd/kubectl", "K8S_VERSION"),
    "kwok": ("sigs.k8s.io/kwok/cmd/kwok", "KWOK_VERSION"),
    "helm": ("helm.sh/helm/v4/cmd/helm", "HELM_VERSION"),
    # not a binary: kwok's lifecycle stages, copied from the kwok module
    "kwok-stages.yaml": ("sigs.k8s.io/kwok", "KWOK_VERSION"),
}


def _is_current(directory: Path, name: str, pins: dict[str, str]) -> bool:
    package, key = _SOURCES[name]
    path = directory / name
    if not path.is_file() or (name in BINARIES and not os.access(path, os.X_OK)):
        return False
    try:
        stamp = (directory / f"{name}.version").read_text().strip()
    except FileNotFoundError:
        return False
    return stamp == f"{package}@{pins[key]}"


def missing_binaries(names: Sequence[str] = BINARIES) -> list[str]:
    """Names of rig artifacts not built yet, or built from other versions than pinned."""
    pins = versions()
    directory = bin_dir()
    wanted = list(names) + (["kwok-stages.yaml"] if "kwok" in names else [])
    return [n for n in wanted if not _is_current(directory, n, pins)]


def binary(name: str) -> Path:
    """Path of a cached rig binary, e.g. ``binary("kubectl")``.

    Raises:
        BinaryMissingError: it was not built (or not from the pinned version);
            the message says how to build.
    """
    if name not in _SOURCES:
        raise ValueError(f"unknown rig binary {name!r}; known: {', '.join(_SOURCES)}")
    if missing_binaries([name]):
        raise BinaryMissingError(
            f"{bin_dir() / name} is missing or not built from the pinned version: build the "
            "rig with `python -m simiankube.testing.controlplane build` (or rig/build.sh)"
        )
    return bin_dir() / name


def build(*, stdout: Any = None) -> None:
    """Run ``rig/build.sh`` (builds only what is missing).

    Args:
        stdout: where the build's output goes (default: inherited).

    Raises:
        RigError: the build failed.
    """
    script = rig_dir() / "build.sh"
    result = subprocess.run(["bash", str(script)], stdout=stdout, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RigError(f"{script} failed with exit code {result.returncode}")


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # state is the field after the parenthesised command name
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


# --------------------------------------------------------------------------
# Certificates and kubeconfigs
# --------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RigError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


def _make_ca(pki: Path) -> None:
    config = pki / "ca.cnf"
    config.write_text(
        "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = ext\n"
        "[dn]\nCN = simiankube-rig-ca\n"
        "[ext]\nbasicConstraints = critical,CA:TRUE\n"
        "keyUsage = critical,keyCertSign,cRLSign,digitalSignature\n"
        "subjectKeyIdentifier = hash\n"
    )
    _openssl(
        "req", "-x509", "-new", "-config", str(config), "-newkey", "ec",
        "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3650",
        "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"),
    )  # fmt: skip


def _make_cert(
    pki: Path,
    name: str,
    *,
    common_name: str,
    organization: str | None = None,
    server_names: Sequence[str] = (),
) -> None:
    """Issue ``pki/<name>.crt`` + ``.key`` signed by the rig CA."""
    dn = f"CN = {common_name}\n" + (f"O = {organization}\n" if organization else "")
    ext = (
        "basicConstraints = critical,CA:FALSE\n"
        "keyUsage = critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage = {'serverAuth,clientAuth' if server_names else 'clientAuth'}\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
    )
    if server_names:
        sans = [f"IP:{n}" if n[0].isdigit() else f"DNS:{n}" for n in server_names]
        ext += f"subjectAltName = {','.join(sans)}\n"
    config = pki / f"{name}.cnf"
    config.write_text(
        "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = ext\n"
        f"[dn]\n{dn}[ext]\n{ext}"
    )
    _openssl(
        "req", "-x509", "-new", "-config", str(config), "-newkey", "ec",
        "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3650",
        "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
        "-keyout", str(pki / f"{name}.key"), "-out", str(pki / f"{name}.crt"),
    )  # fmt: skip


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_file: Path,
    user: dict[str, str],
    namespace: str | None = None,
) -> Path:
    """Write a kubeconfig (JSON, which every YAML reader accepts), mode 0600."""
    context: dict[str, str] = {"cluster": "simiankube-rig", "user": "rig-user"}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "simiankube-rig",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_file)},
            }
        ],
        "users": [{"name": "rig-user", "user": user}],
        "contexts": [{"name": "simiankube-rig", "context": context}],
        "current-context": "simiankube-rig",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(config, handle, indent=2)
        handle.write("\n")
    return path


def kubeconfig_for_token(
    token: str, path: Path, *, server: str, ca_file: Path, namespace: str | None = None
) -> Path:
    """Write a kubeconfig that authenticates with a bearer token (e.g. a ServiceAccount's)."""
    return _write_kubeconfig(
        path, server=server, ca_file=ca_file, user={"token": token}, namespace=namespace
    )


def _client_cert_kubeconfig(path: Path, *, server: str, pki: Path, name: str) -> Path:
    return _write_kubeconfig(
        path,
        server=server,
        ca_file=pki / "ca.crt",
        user={
            "client-certificate-data": _b64(pki / f"{name}.crt"),
            "client-key-data": _b64(pki / f"{name}.key"),
        },
    )


# --------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------

_PR_SET_PDEATHSIG: Final = 1


def _child_setup() -> None:  # pragma: no cover - runs in the forked child
    """Make the child die with its parent, even if the parent is SIGKILLed."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


@dataclass
class _Child:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid


def _terminate_groups(pids: Sequence[int], *, grace: float, wait: Callable[[int], bool]) -> None:
    """SIGTERM each process group, then SIGKILL what is left after ``grace`` seconds.

    ``wait(pid)`` returns True once that pid is gone (and reaped, if it is ours).
    """
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    remaining = list(pids)
    while remaining and time.monotonic() < deadline:
        remaining = [pid for pid in remaining if not wait(pid)]
        if remaining:
            time.sleep(0.05)
    for pid in pids:  # also kills grandchildren left in a group whose leader exited
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while remaining and time.monotonic() < deadline:
        remaining = [pid for pid in remaining if not wait(pid)]
        if remaining:
            time.sleep(0.05)
    if remaining:
        raise RigError(f"processes {remaining} survived SIGKILL")


# --------------------------------------------------------------------------
# The control plane
# --------------------------------------------------------------------------


@dataclass
class _Ports:
    apiserver: int = field(default_factory=free_port)
    etcd_client: int = field(default_factory=free_port)
    etcd_peer: int = field(default_factory=free_port)
    controller_manager: int = field(default_factory=free_port)
    scheduler: int = field(default_factory=free_port)
    kwok: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        # Each free_port() call closes its socket before the next one, so the
        # kernel could hand out the same port twice: draw again until distinct.
        while len(set(vars(self).values())) < len(vars(self)):
            for name in vars(self):
                setattr(self, name, free_port())


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok.

    ``start()`` returns once the API server is ready, the three kwok nodes are
    Ready and the ``default`` ServiceAccount exists; ``stop()`` ends every
    child process (SIGTERM, then SIGKILL) and removes what the rig wrote into
    ``workdir`` (and ``workdir`` itself if that leaves it empty). Also usable
    as a context manager. ``stop()`` is registered with ``atexit`` and, when
    started from the main thread, SIGTERM is turned into KeyboardInterrupt
    until ``stop()``, so an interrupted test run still tears down.

    Args:
        workdir: directory for certificates, data, logs, the kubeconfig and
            the state file; created if missing.
        startup_timeout: seconds ``start()`` may take in total (default 180:
            generous for a loaded 2-core machine; typical is well under 30).
        progress: called with a line of text at each bring-up step.
        handle_signals: convert SIGTERM to KeyboardInterrupt while running
            (only possible from the main thread).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        startup_timeout: float = 180.0,
        progress: Callable[[str], None] | None = None,
        handle_signals: bool = True,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.startup_timeout = startup_timeout
        self._progress = progress or (lambda _line: None)
        self._handle_signals = handle_signals
        self.ports = _Ports()
        self._children: list[_Child] = []
        self._started = False
        self._stopping = False
        self._previous_sigterm: Any = None
        self._ssl: ssl.SSLContext | None = None
        self.startup_seconds: float | None = None

    # -- paths and identities ------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (``system:masters`` client certificate)."""
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        """URL of the API server."""
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def ca_file(self) -> Path:
        """CA certificate that signed the API server's serving certificate."""
        return self.workdir / "pki" / "ca.crt"

    @property
    def state_file(self) -> Path:
        return self.workdir / STATE_FILE

    @staticmethod
    def binary(name: str) -> Path:
        """Path of a cached rig binary (see :func:`binary`)."""
        return binary(name)

    # -- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Bring the control plane up and wait until it is usable."""
        if self._started:
            raise RigError("control plane already started")
        missing = missing_binaries(CONTROL_PLANE_BINARIES)
        if missing:
            raise BinaryMissingError(
                f"rig binaries missing from {bin_dir()}: {', '.join(missing)}; build them with "
                "`python -m simiankube.testing.controlplane build` (or rig/build.sh)"
            )
        if shutil.which("openssl") is None:
            raise RigError("openssl not found in PATH (Debian: apt-get install openssl)")
        if self.state_file.exists():
            raise RigError(
                f"{self.state_file} exists: a rig may already run there "
                f"(stop it with `python -m simiankube.testing.controlplane down {self.workdir}`)"
            )
        self._started = True
        self._install_signal_handler()
        atexit.register(self.stop)
        began = time.monotonic()
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            for sub in ("pki", "config", "etcd-data", "logs", "run"):
                (self.workdir / sub).mkdir(mode=0o700, exist_ok=True)
            self._write_state(ready=False)
            self._make_credentials()
            self._progress(f"credentials ready ({time.monotonic() - began:.1f}s)")
            deadline = began + self.startup_timeout
            self._wait_ready(deadline, began)
            self.startup_seconds = time.monotonic() - began
            self._write_state(ready=True)
            self._progress(f"control plane ready in {self.startup_seconds:.1f}s")
        except BaseException as error:
            detail = self._log_tails() if isinstance(error, (RigError, WaitTimeout)) else ""
            self.stop()
            if detail:
                raise RigError(f"{error}\n{detail}") from error
            raise

    def stop(self) -> None:
        """Stop every child process and remove the rig's files. Idempotent."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        try:
            running = [c for c in self._children if c.popen is not None]
            # Controllers first, then the API server, etcd last.
            order = list(reversed(running))

            def reaped(pid: int) -> bool:
                for child in running:
                    if child.pid == pid:
                        assert child.popen is not None
                        return child.popen.poll() is not None
                return not pid_alive(pid)

            # The data is thrown away, so a short grace is enough (kube-apiserver
            # stops serving at once on SIGTERM but lingers for many seconds).
            _terminate_groups([c.pid for c in order], grace=2.0, wait=reaped)
            self._children.clear()
            self._remove_files()
        finally:
            self._started = False
            self._stopping = False
            atexit.unregister(self.stop)
            self._restore_signal_handler()

    # -- conveniences -------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60.0,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the rig's kubectl against this control plane (admin unless ``kubeconfig``).

        Raises:
            RigError: ``check`` and kubectl exited non-zero (message has stderr).
        """
        argv = [str(binary("kubectl")), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        result = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout)
        if check and result.returncode != 0:
            raise RigError(
                f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def kubeconfig_for_token(self, token: str, path: Path, namespace: str | None = None) -> Path:
        """Write a kubeconfig for this API server authenticating with ``token``."""
        return kubeconfig_for_token(
            token, path, server=self.server, ca_file=self.ca_file, namespace=namespace
        )

    def create_token(self, namespace: str, service_account: str, duration: str = "1h") -> str:
        """Issue a token for a ServiceAccount (TokenRequest API, via kubectl)."""
        result = self.kubectl(
            "create", "token", service_account, "-n", namespace, f"--duration={duration}"
        )
        return result.stdout.strip()

    def api(
        self, method: str, path: str, body: object | None = None, *, token: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """One request to the API server; admin client cert unless ``token`` is given.

        Returns (HTTP status, decoded JSON body or ``{}``); never raises on
        HTTP error statuses.
        """
        context = self._ssl_context(admin=token is None)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.server + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            decoded = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            decoded = {"raw": raw.decode(errors="replace")}
        return status, decoded if isinstance(decoded, dict) else {"items": decoded}

    # -- internals ----------------------------------------------------------------

    def _install_signal_handler(self) -> None:
        if not self._handle_signals or threading.current_thread() is not threading.main_thread():
            return

        def on_sigterm(signum: int, frame: types.FrameType | None) -> None:
            if not self._stopping:
                raise KeyboardInterrupt(f"signal {signum}")

        self._previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)

    def _restore_signal_handler(self) -> None:
        if self._previous_sigterm is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    def _write_state(self, *, ready: bool) -> None:
        state = {
            "pid": os.getpid(),
            "ready": ready,
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "ports": vars(self.ports),
            "processes": [
                {"name": c.name, "pid": c.pid, "argv0": c.argv[0]}
                for c in self._children
                if c.popen is not None
            ],
            "items": list(_WORKDIR_ITEMS),
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_file)

    def _make_credentials(self) -> None:
        pki = self.workdir / "pki"
        _make_ca(pki)
        first_service_ip = "10.96.0.1"
        _make_cert(
            pki,
            "apiserver",
            common_name="kube-apiserver",
            server_names=[
                "127.0.0.1",
                first_service_ip,
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )
        _make_cert(pki, "admin", common_name="rig-admin", organization="system:masters")
        _make_cert(pki, "controller-manager", common_name="system:kube-controller-manager")
        _make_cert(pki, "scheduler", common_name="system:kube-scheduler")
        _openssl(
            "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", str(pki / "sa.key"),
        )  # fmt: skip
        _openssl("pkey", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
        config = self.workdir / "config"
        _client_cert_kubeconfig(self.kubeconfig, server=self.server, pki=pki, name="admin")
        _client_cert_kubeconfig(
            config / "controller-manager.kubeconfig",
            server=self.server,
            pki=pki,
            name="controller-manager",
        )
        _client_cert_kubeconfig(
            config / "scheduler.kubeconfig", server=self.server, pki=pki, name="scheduler"
        )

    def _argvs(self) -> list[tuple[str, list[str]]]:
        pki = self.workdir / "pki"
        config = self.workdir / "config"
        run = self.workdir / "run"
        p = self.ports
        etcd_url = f"http://127.0.0.1:{p.etcd_client}"
        peer_url = f"http://127.0.0.1:{p.etcd_peer}"
        kcm_kubeconfig = config / "controller-manager.kubeconfig"
        scheduler_kubeconfig = config / "scheduler.kubeconfig"
        return [
            ("etcd", [
                str(binary("etcd")),
                "--name=rig",
                f"--data-dir={self.workdir / 'etcd-data'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=rig={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",  # test data: speed over durability
                "--log-level=warn",
            ]),
            ("kube-apiserver", [
                str(binary("kube-apiserver")),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # loopback may not be an Endpoints address; nothing in the rig
                # needs the `kubernetes` Service to have endpoints.
                "--endpoint-reconciler-type=none",
                f"--secure-port={p.apiserver}",
                f"--cert-dir={run / 'apiserver'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=PodSecurity,NodeRestriction",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--allow-privileged=true",  # as kubeadm/kind: Pod Security decides
                "--profiling=false",
                "--v=1",
            ]),
            ("kube-controller-manager", [
                str(binary("kube-controller-manager")),
                f"--kubeconfig={kcm_kubeconfig}",
                f"--authentication-kubeconfig={kcm_kubeconfig}",
                f"--authorization-kubeconfig={kcm_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p.controller_manager}",
                f"--cert-dir={run / 'controller-manager'}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--controllers=*",
                "--profiling=false",
                "--v=1",
            ]),
            ("kube-scheduler", [
                str(binary("kube-scheduler")),
                f"--kubeconfig={scheduler_kubeconfig}",
                f"--authentication-kubeconfig={scheduler_kubeconfig}",
                f"--authorization-kubeconfig={scheduler_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p.scheduler}",
                f"--cert-dir={run / 'scheduler'}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ]),
            ("kwok", [
                str(binary("kwok")),
                f"--config={binary('kwok-stages.yaml')}",
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-label-selector={KWOK_NODE_LABEL[0]}={KWOK_NODE_LABEL[1]}",
                "--node-ip=127.0.0.1",
                f"--cidr={POD_CIDR}",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{p.kwok}",
            ]),
        ]  # fmt: skip

    def _launch(self, names: Sequence[str]) -> None:
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        for name, argv in self._argvs():
            if name not in names:
                continue
            log = self.workdir / "logs" / f"{name}.log"
            child = _Child(name=name, argv=argv, log=log)
            with open(log, "ab") as handle:
                child.popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir / "run",
                    env=env,
                    start_new_session=True,
                    preexec_fn=_child_setup,
                )
            self._children.append(child)
            self._write_state(ready=False)

    def _check_children(self) -> None:
        for child in self._children:
            assert child.popen is not None
            code = child.popen.poll()
            if code is not None:
                raise RigError(f"{child.name} exited with code {code} (log: {child.log})")

    def _wait(
        self, predicate: Callable[[], object], deadline: float, message: str, began: float
    ) -> None:
        def checked() -> object:
            self._check_children()
            return predicate()

        wait_for(checked, max(deadline - time.monotonic(), 0.1), interval=0.1, message=message)
        self._progress(f"{message}: ok ({time.monotonic() - began:.1f}s)")

    def _wait_ready(self, deadline: float, began: float) -> None:
        # etcd and the API server together (the API server retries etcd);
        # the rest only once the API server is ready: the controller manager
        # exits if RBAC's bootstrap roles do not exist yet when it starts.
        self._launch(["etcd", "kube-apiserver"])
        self._wait(lambda: self._get_ok("/readyz"), deadline, "kube-apiserver /readyz", began)
        self._launch(["kube-controller-manager", "kube-scheduler", "kwok"])
        self._create_nodes()
        self._wait(
            lambda: self._component_healthy(self.ports.controller_manager),
            deadline,
            "kube-controller-manager /healthz",
            began,
        )
        self._wait(
            lambda: self._component_healthy(self.ports.scheduler),
            deadline,
            "kube-scheduler /healthz",
            began,
        )
        self._wait(self._nodes_ready, deadline, f"{len(NODES)} kwok nodes Ready", began)
        self._wait(
            lambda: self.api("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0]
            == 200,
            deadline,
            "ServiceAccount default/default",
            began,
        )

    def _ssl_context(self, *, admin: bool) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if admin:
            if self._ssl is None:
                pki = self.workdir / "pki"
                context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
                self._ssl = context
            return self._ssl
        return context

    def _get_ok(self, path: str) -> bool:
        try:
            return self.api("GET", path)[0] == 200
        except (OSError, urllib.error.URLError):
            return False

    @staticmethod
    def _component_healthy(port: int) -> bool:
        # Components serve a self-signed certificate; /healthz is open to all.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            url = f"https://127.0.0.1:{port}/healthz"
            with urllib.request.urlopen(url, context=context, timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _create_nodes(self) -> None:
        for name, zone in NODES:
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {
                        KWOK_NODE_LABEL[0]: KWOK_NODE_LABEL[1],
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "node-role.kubernetes.io/agent": "",
                        "topology.kubernetes.io/region": "rig",
                        "topology.kubernetes.io/zone": zone,
                    },
                    "annotations": {
                        "kwok.x-k8s.io/node": "fake",
                        "node.alpha.kubernetes.io/ttl": "0",
                    },
                },
                "spec": {},
                "status": {
                    "allocatable": dict(NODE_CAPACITY),
                    "capacity": dict(NODE_CAPACITY),
                    "nodeInfo": {
                        "architecture": "amd64",
                        "operatingSystem": "linux",
                        "kubeletVersion": f"fake-{versions()['K8S_VERSION']}",
                        "kubeProxyVersion": "fake",
                    },
                },
            }
            status, body = self.api("POST", "/api/v1/nodes", node)
            if status not in (201, 409):
                raise RigError(f"creating node {name} failed: HTTP {status} {body}")

    def _nodes_ready(self) -> bool:
        status, body = self.api("GET", "/api/v1/nodes?labelSelector=type%3Dkwok")
        if status != 200:
            return False
        ready = 0
        for node in body.get("items", []):
            for condition in node.get("status", {}).get("conditions", []):
                if condition.get("type") == "Ready" and condition.get("status") == "True":
                    ready += 1
        return ready >= len(NODES)

    def _log_tails(self, lines: int = 15) -> str:
        parts = []
        for child in self._children:
            try:
                tail = child.log.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            parts.append(f"--- {child.name} ({child.log}), last {lines} lines:")
            parts.extend(tail)
        return "\n".join(parts)

    def _remove_files(self) -> None:
        _remove_workdir(self.workdir)


def _remove_workdir(workdir: Path) -> None:
    """Remove what the rig created in ``workdir``; remove ``workdir`` if then empty."""
    for item in (*_WORKDIR_ITEMS, STATE_FILE + ".tmp"):
        path = workdir / item
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    with contextlib.suppress(OSError):
        workdir.rmdir()  # only succeeds when empty: never removes other files


# --------------------------------------------------------------------------
# Stopping a rig started by another process
# --------------------------------------------------------------------------


def read_state(workdir: Path) -> dict[str, Any] | None:
    """The state file of a rig in ``workdir``, or None if there is none."""
    try:
        return dict(json.loads((Path(workdir) / STATE_FILE).read_text()))
    except FileNotFoundError:
        return None


def _is_same_process(pid: int, argv0: str) -> bool:
    """Guard against pid reuse: the pid still runs the binary we started."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    return cmdline == argv0 and pid_alive(pid)


def stop_rig(workdir: Path, *, timeout: float = 30.0) -> bool:
    """Stop the rig recorded in ``workdir/state.json`` from any process.

    Asks the owning process to stop (SIGTERM) and waits for it; kills any
    recorded child it left behind; removes the rig's files.

    Returns:
        False if there was no rig state in ``workdir``, True otherwise.
    """
    workdir = Path(workdir).resolve()
    state = read_state(workdir)
    if state is None:
        return False
    owner = int(state["pid"])
    if owner != os.getpid() and pid_alive(owner):
        with contextlib.suppress(ProcessLookupError):
            os.kill(owner, signal.SIGTERM)
        with contextlib.suppress(WaitTimeout):
            wait_for(lambda: not pid_alive(owner), timeout, interval=0.1, message="rig owner exit")
    leftovers = [
        int(p["pid"]) for p in state.get("processes", []) if _is_same_process(p["pid"], p["argv0"])
    ]
    if leftovers:
        _terminate_groups(leftovers, grace=2.0, wait=lambda pid: not pid_alive(pid))
    if pid_alive(owner) and owner != os.getpid():
        with contextlib.suppress(ProcessLookupError):
            os.kill(owner, signal.SIGKILL)
    _remove_workdir(workdir)
    return True


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

_READY_LINE: Final = "SIMIANKUBE-RIG-READY"


def _print(line: str) -> None:
    print(line, flush=True)


def _wait_for_signal() -> int:
    """Block until SIGINT or SIGTERM; return the signal number."""
    received: list[int] = []
    event = threading.Event()

    def handler(signum: int, frame: types.FrameType | None) -> None:
        received.append(signum)
        event.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not event.wait(1.0):
        pass
    return received[0]


def _serve(workdir: Path, *, detached: bool) -> int:
    """Run a rig in this process until SIGINT/SIGTERM (used by ``run`` and ``up``)."""
    # SIGINT/SIGTERM during start-up abort it (KeyboardInterrupt) and tear down.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    rig = ControlPlane(
        workdir, progress=lambda line: _print(f"[rig] {line}"), handle_signals=False
    )
    try:
        rig.start()
    except KeyboardInterrupt:
        _print("[rig] interrupted during start-up; stopped")
        return 130
    except RigError as error:
        _print(f"[rig] ERROR: {error}")
        return 1
    try:
        _print(f"export KUBECONFIG={rig.kubeconfig}")
        if detached:
            _print(_READY_LINE)
            # Nobody reads our output any more: don't die of a closed pipe.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
        else:
            _print("[rig] running; Ctrl-C (SIGINT) or SIGTERM stops it")
        signum = _wait_for_signal()
        # Ignore further signals while tearing down.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _print(f"[rig] signal {signum}: stopping")
    except KeyboardInterrupt:
        pass
    finally:
        rig.stop()
    _print("[rig] stopped")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    try:
        build()
    except RigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _check_binaries() -> str | None:
    try:
        missing = missing_binaries(CONTROL_PLANE_BINARIES)
    except RigError as error:
        return str(error)
    if missing:
        return (
            f"rig binaries missing from {bin_dir()}: {', '.join(missing)}\n"
            "build them first: python -m simiankube.testing.controlplane build"
        )
    return None


def _cmd_run(args: argparse.Namespace) -> int:
    problem = _check_binaries()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    return _serve(Path(args.dir), detached=False)


def _cmd_up(args: argparse.Namespace) -> int:
    problem = _check_binaries()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    workdir = Path(args.dir).resolve()
    if read_state(workdir) is not None:
        print(
            f"error: a rig is already recorded in {workdir}; "
            f"run `python -m simiankube.testing.controlplane down {workdir}` first",
            file=sys.stderr,
        )
        return 1
    # The detached process imports this module the way we did: append (never
    # prepend, so nothing in the checkout can shadow the standard library) the
    # directory holding the simiankube package.
    package_root = str(Path(__file__).resolve().parents[2])
    bootstrap = (
        f"import sys; sys.path.append({package_root!r}); "
        "from simiankube.testing.controlplane import main; sys.exit(main())"
    )
    supervisor = subprocess.Popen(
        [sys.executable, "-c", bootstrap, "_serve", str(workdir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # detached: survives this command and its terminal
        text=True,
    )
    assert supervisor.stdout is not None
    ready = False
    export = ""
    try:
        for line in supervisor.stdout:
            line = line.rstrip("\n")
            if line == _READY_LINE:
                ready = True
                break
            if line.startswith("export KUBECONFIG="):
                export = line
            else:
                print(line, file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        supervisor.terminate()
        supervisor.wait()
        return 130
    if not ready:
        supervisor.wait()
        print(f"error: the rig did not start (exit code {supervisor.returncode})", file=sys.stderr)
        return 1
    print(export)
    print(
        f"# rig running (pid {supervisor.pid}); stop it with: "
        f"python -m simiankube.testing.controlplane down {workdir}",
        file=sys.stderr,
    )
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    workdir = Path(args.dir)
    if not stop_rig(workdir, timeout=args.timeout):
        print(f"no rig recorded in {workdir} (nothing to stop)", file=sys.stderr)
        return 0
    print(f"rig in {workdir} stopped and removed", file=sys.stderr)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    return _serve(Path(args.dir), detached=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simiankube.testing.controlplane",
        description="A real Kubernetes control plane on loopback for tests "
        "(etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok nodes).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build_parser = commands.add_parser(
        "build",
        help="build the rig binaries (rig/build.sh)",
        description="Build the binaries from upstream Go modules into "
        "$SIMIANKUBE_CACHE (default ~/.cache/simiankube)/bin/<k8s-version>; "
        "only missing ones are built. Needs Go and the Go module proxy.",
    )
    build_parser.set_defaults(func=_cmd_build)

    up = commands.add_parser(
        "up",
        help="start a rig in the background, return when ready",
        description="Start a control plane in DIR, detached; returns once it is ready "
        "and prints `export KUBECONFIG=DIR/kubeconfig`. Stop it with `down DIR`.",
    )
    up.add_argument("dir", metavar="DIR", help="work directory (created; removed by down)")
    up.set_defaults(func=_cmd_up)

    down = commands.add_parser(
        "down",
        help="stop the rig in DIR and remove its files",
        description="Stop the control plane recorded in DIR/state.json (from any process) "
        "and remove everything it wrote into DIR.",
    )
    down.add_argument("dir", metavar="DIR", help="work directory given to up")
    down.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for a clean stop"
    )
    down.set_defaults(func=_cmd_down)

    run_parser = commands.add_parser(
        "run",
        help="run a rig in the foreground until Ctrl-C / SIGTERM",
        description="Start a control plane in DIR and keep it in the foreground; "
        "SIGINT or SIGTERM stops it and removes its files.",
    )
    run_parser.add_argument("dir", metavar="DIR", help="work directory (created; removed on exit)")
    run_parser.set_defaults(func=_cmd_run)

    serve = commands.add_parser("_serve")  # internal: the detached process behind `up`
    serve.add_argument("dir")
    serve.set_defaults(func=_cmd_serve)
    # keep the internal command out of the usage and help listings
    commands._choices_actions = [  # noqa: SLF001
        a for a in commands._choices_actions if a.dest != "_serve"  # noqa: SLF001
    ]

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
