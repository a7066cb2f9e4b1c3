"""The control plane: etcd, kube-apiserver, the controllers and kwok, supervised.

``start()`` brings them up in order and waits until they are usable; ``stop()``
ends them and removes everything written into the work directory. A rig
started by another process is stopped through its state file (``stop_rig``).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time
import types
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from simiankube.testing.controlplane import apiserver, controllers, etcd, kwok, node, realnode
from simiankube.testing.controlplane.binaries import (
    CONTROL_PLANE_BINARIES,
    bin_dir,
    binary,
    missing_binaries,
    versions,
)
from simiankube.testing.controlplane.errors import BinaryMissingError, RigError
from simiankube.testing.controlplane.pki import (
    client_cert_kubeconfig,
    kubeconfig_for_token,
    make_ca,
    make_cert,
    openssl,
)
from simiankube.testing.controlplane.processes import (
    Child,
    child_setup,
    free_port,
    is_same_process,
    pid_alive,
    terminate_groups,
)
from simiankube.testing.wait import WaitTimeout, wait_for

#: Name of the state file written into the work directory.
STATE_FILE: Final = "state.json"

#: Items the rig creates inside its work directory (and removes on stop).
_WORKDIR_ITEMS: Final = (
    STATE_FILE, "kubeconfig", "pki", "config", "etcd-data", "logs", "run", realnode.NODE_DIR
)  # fmt: skip


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
        startup_timeout: seconds ``start()`` may take in total (default 180,
            900 with a real node: generous for a loaded 2-core machine;
            typical is well under 30, and 60 with a real node, images cached).
        progress: called with a line of text at each bring-up step.
        handle_signals: convert SIGTERM to KeyboardInterrupt while running
            (only possible from the main thread).
        real_node: also run a real node (containerd, kubelet, kube-proxy,
            CoreDNS; see :mod:`.realnode`); needs root, one per machine. The
            API server then listens on the node's bridge address, so pods
            reach it through the ``kubernetes`` Service.
        policy_engine: with ``real_node``, run kube-router to enforce
            NetworkPolicies (without it, policies are stored, not enforced).
        kwok_nodes: run kwok and its fake nodes (default: only without a
            real node; next to one they are tainted so only pods that
            tolerate ``kwok.x-k8s.io/node`` land there).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        startup_timeout: float | None = None,
        progress: Callable[[str], None] | None = None,
        handle_signals: bool = True,
        real_node: bool = False,
        policy_engine: bool = True,
        kwok_nodes: bool | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.kwok_nodes = not real_node if kwok_nodes is None else kwok_nodes
        self.node = (
            realnode.RealNode(self.workdir, policy_engine=policy_engine, progress=self._say)
            if real_node
            else None
        )
        # a real node may build its images first (minutes when cold)
        self.startup_timeout = startup_timeout or (900.0 if real_node else 180.0)
        self._progress = progress or (lambda _line: None)
        self._handle_signals = handle_signals
        self.ports = _Ports()
        self._children: list[Child] = []
        self._started = False
        self._stopping = False
        self._previous_sigterm: Any = None
        self._ssl: ssl.SSLContext | None = None
        self.startup_seconds: float | None = None

    def _say(self, line: str) -> None:
        self._progress(line)

    # -- paths and identities ------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (``system:masters`` client certificate)."""
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        """URL of the API server (on the node's bridge address with a real node)."""
        return f"https://{self.host}:{self.ports.apiserver}"

    @property
    def host(self) -> str:
        """The address the API server listens on."""
        return node.NODE_IP if self.node else "127.0.0.1"

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
        if self.node is not None:
            self.node.check()
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
            if self.node is not None:
                self.node.prepare()
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
            if self.node is not None:
                self.node.stop(self._terminate)
            # Controllers first, then the API server, etcd last.
            self._terminate([c.name for c in reversed(self._children)])
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

    def apply(self, obj: dict[str, Any]) -> None:
        """Create an object (kept as it is if it exists); the path comes from its kind."""
        kind, meta = obj["kind"], obj["metadata"]
        group_version = obj["apiVersion"]
        base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
        plural = kind.lower() + "s"  # every kind the rig creates
        namespace = meta.get("namespace")
        path = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
        status, body = self.api("POST", path, obj)
        if status not in (201, 409):
            raise RigError(f"creating {kind} {meta['name']} failed: HTTP {status} {body}")

    def launch(self, name: str, argv: list[str], *, env: dict[str, str] | None = None) -> None:
        """Start a child process, logged to ``logs/<name>.log``, in its own process group."""
        if env is None:
            env = dict(os.environ)
            env.pop("KUBECONFIG", None)
        log = self.workdir / "logs" / f"{name}.log"
        child = Child(name=name, argv=argv, log=log)
        with open(log, "ab") as handle:
            child.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=self.workdir / "run",
                env=env,
                start_new_session=True,
                preexec_fn=child_setup,
            )
        self._children.append(child)
        self._write_state(ready=False)

    # -- internals ----------------------------------------------------------------

    def _terminate(self, names: Sequence[str]) -> None:
        """SIGTERM, then SIGKILL, the named children (in that order); forget them."""
        chosen = [
            c for name in names for c in self._children if c.name == name and c.popen is not None
        ]

        def reaped(pid: int) -> bool:
            for child in chosen:
                if child.pid == pid:
                    assert child.popen is not None
                    return child.popen.poll() is not None
            return not pid_alive(pid)

        # The data is thrown away, so a short grace is enough (kube-apiserver
        # stops serving at once on SIGTERM but lingers for many seconds).
        terminate_groups([c.pid for c in chosen], grace=2.0, wait=reaped)
        self._children = [c for c in self._children if c not in chosen]

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
        make_ca(pki)
        make_cert(
            pki,
            "apiserver",
            common_name="kube-apiserver",
            server_names=["127.0.0.1", self.host, *apiserver.SERVER_NAMES],
        )
        make_cert(pki, "admin", common_name="rig-admin", organization="system:masters")
        make_cert(pki, "controller-manager", common_name="system:kube-controller-manager")
        make_cert(pki, "scheduler", common_name="system:kube-scheduler")
        openssl(
            "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", str(pki / "sa.key"),
        )  # fmt: skip
        openssl("pkey", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
        config = self.workdir / "config"
        client_cert_kubeconfig(self.kubeconfig, server=self.server, pki=pki, name="admin")
        client_cert_kubeconfig(
            config / "controller-manager.kubeconfig",
            server=self.server,
            pki=pki,
            name="controller-manager",
        )
        client_cert_kubeconfig(
            config / "scheduler.kubeconfig", server=self.server, pki=pki, name="scheduler"
        )
        if self.node is not None:
            self.node.make_credentials(pki, self.server)

    def _argvs(self) -> list[tuple[str, list[str]]]:
        pki = self.workdir / "pki"
        config = self.workdir / "config"
        run = self.workdir / "run"
        p = self.ports
        return [
            ("etcd", etcd.argv(
                data_dir=self.workdir / "etcd-data",
                client_port=p.etcd_client,
                peer_port=p.etcd_peer,
            )),
            ("kube-apiserver", apiserver.argv(
                etcd_url=etcd.client_url(p.etcd_client),
                port=p.apiserver,
                pki=pki,
                cert_dir=run / "apiserver",
                listen=self._listen(pki),
            )),
            ("kube-controller-manager", controllers.controller_manager_argv(
                kubeconfig=config / "controller-manager.kubeconfig",
                port=p.controller_manager,
                pki=pki,
                cert_dir=run / "controller-manager",
            )),
            ("kube-scheduler", controllers.scheduler_argv(
                kubeconfig=config / "scheduler.kubeconfig",
                port=p.scheduler,
                cert_dir=run / "scheduler",
            )),
            ("kwok", kwok.argv(kubeconfig=self.kubeconfig, port=p.kwok)),
        ]  # fmt: skip

    def _listen(self, pki: Path) -> apiserver.Listen:
        if self.node is None:
            return apiserver.Listen()
        return apiserver.Listen(
            bind_address=self.host,
            advertise_address=self.host,
            kubelet_client_cert=pki / "apiserver-kubelet-client.crt",
            kubelet_client_key=pki / "apiserver-kubelet-client.key",
        )

    def _launch(self, names: Sequence[str]) -> None:
        for name, argv in self._argvs():
            if name in names:
                self.launch(name, argv)

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
        self._launch(["kube-controller-manager", "kube-scheduler"])
        if self.kwok_nodes:
            self._launch(["kwok"])
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
        if self.kwok_nodes:
            self._wait(self._nodes_ready, deadline, f"{len(kwok.NODES)} kwok nodes Ready", began)
        if self.node is not None:
            self.node.start(self, lambda check, what: self._wait(check, deadline, what, began))
        self._wait(
            lambda: self.api("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
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
        for name, zone in kwok.NODES:
            node = kwok.node_manifest(
                name, zone, k8s_version=versions()["K8S_VERSION"], tainted=self.node is not None
            )
            status, body = self.api("POST", "/api/v1/nodes", node)
            if status not in (201, 409):
                raise RigError(f"creating node {name} failed: HTTP {status} {body}")

    def _nodes_ready(self) -> bool:
        status, body = self.api("GET", "/api/v1/nodes?labelSelector=type%3Dkwok")
        return status == 200 and kwok.ready_nodes(body) >= len(kwok.NODES)

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


def read_state(workdir: Path) -> dict[str, Any] | None:
    """The state file of a rig in ``workdir``, or None if there is none."""
    try:
        return dict(json.loads((Path(workdir) / STATE_FILE).read_text()))
    except FileNotFoundError:
        return None


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
        int(p["pid"]) for p in state.get("processes", []) if is_same_process(p["pid"], p["argv0"])
    ]
    if leftovers:
        terminate_groups(leftovers, grace=2.0, wait=lambda pid: not pid_alive(pid))
    if pid_alive(owner) and owner != os.getpid():
        with contextlib.suppress(ProcessLookupError):
            os.kill(owner, signal.SIGKILL)
    realnode.restore_host(workdir)  # a real node whose owner did not clean up
    _remove_workdir(workdir)
    return True
