"""The node's images: built here from the project's own Dockerfiles, then run for real.

The project's images run with ``buildah run`` (chroot isolation, the host's
network), as the image's own user, so what is checked is what a pod would run.
The pause binary runs as PID 1 of a fresh PID namespace, as in a pod sandbox.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from simiankube import contract
from simiankube.render import RenderSettings, render
from simiankube.model.spec import load_file
from simiankube.testing import images
from simiankube.testing.images import Archive, Image, extract_file
from simiankube.model.topology import expand

REPO = Path(__file__).resolve().parents[2]
APP_VERSION = yaml.safe_load((REPO / "helm" / "simiankube" / "Chart.yaml").read_text())["appVersion"]
EXPECTED_REFS = {
    "nanoservice": f"ghcr.io/simiankube/nanoservice:{APP_VERSION}",
    "operator": f"ghcr.io/simiankube/operator:{APP_VERSION}",
    "pause": "registry.k8s.io/pause:3.10",
}
PROJECT_IMAGES = ("nanoservice", "operator")


def versions_env() -> dict[str, str]:
    lines = (REPO / "rig" / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


@pytest.fixture(scope="module")
def working(node_images: dict[str, Image]) -> Iterator[dict[str, str]]:
    """One buildah working container per project image, shared by this module's tests
    (each is a full copy of the image on the vfs store), removed afterwards."""
    names: dict[str, str] = {}
    try:
        for image in PROJECT_IMAGES:
            made = images.buildah("from", "--pull=never", node_images[image].ref)
            assert made.returncode == 0, made.stderr
            names[image] = made.stdout.strip()
        yield names
    finally:
        for name in names.values():
            images.buildah("rm", name)


def run_args(name: str, *command: str, env: dict[str, str] | None = None, volumes: tuple[str, ...] = ()) -> list[str]:
    """``buildah run`` of a command in the container, as the image's user."""
    options = [f"--env={key}={value}" for key, value in (env or {}).items()] + [f"--volume={v}" for v in volumes]
    return [str(images.SCRIPT), "buildah", "run", "--isolation=chroot", *options, name, "--", *command]


def run_in(name: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(run_args(name, *command), capture_output=True, text=True, timeout=300)


FIND = """
import importlib.util, json, os, shutil, sys
print(json.dumps({
    "modules": {m: importlib.util.find_spec(m) is not None for m in sys.argv[1].split(",")},
    "tools": {t: shutil.which(t) for t in ("gcc", "cc", "c++", "g++", "clang", "make", "ld", "as")},
    "uid": [os.getuid(), os.getgid()],
}))
"""


def probe_modules(name: str, *modules: str) -> dict[str, object]:
    """Which modules import, which compilers are on PATH, and the uid/gid, inside the container."""
    result = run_in(name, "python", "-c", FIND, ",".join(modules))
    assert result.returncode == 0 and result.stdout, f"exit {result.returncode}, stderr: {result.stderr}"
    return dict(json.loads(result.stdout))


# --- no build needed ---------------------------------------------------------

def test_the_images_are_named_as_the_chart_and_the_renderer_expect() -> None:
    listed = subprocess.run([str(images.SCRIPT), "list"], capture_output=True, text=True, check=True).stdout
    refs = dict(line.split("\t") for line in listed.splitlines())
    assert {name: refs[name] for name in EXPECTED_REFS} == EXPECTED_REFS
    coredns = versions_env().get("COREDNS_VERSION")
    assert refs["coredns"] == (f"registry.k8s.io/coredns/coredns:{coredns}" if coredns else "")
    assert RenderSettings().image == EXPECTED_REFS["nanoservice"]


def test_readme_loads_the_images_the_chart_uses() -> None:
    readme = (REPO / "README.md").read_text()
    named = set(re.findall(r"ghcr\.io/simiankube/[a-z]+:[0-9][^\s`]*", readme))
    assert named == {EXPECTED_REFS["nanoservice"], EXPECTED_REFS["operator"]}
    assert "make images" in readme and "kind load docker-image" in readme and "minikube image load" in readme


def test_build_output_is_parsed_strictly() -> None:
    parsed = images.parse_build_output("pause\tregistry.k8s.io/pause:3.10\t/c/pause.tar\n")
    assert parsed == {"pause": Image("pause", "registry.k8s.io/pause:3.10", Path("/c/pause.tar"))}
    with pytest.raises(images.ImageError, match="unexpected line"):
        images.parse_build_output("pause\tregistry.k8s.io/pause:3.10\n")


def test_help_and_bad_commands() -> None:
    helped = subprocess.run([str(images.SCRIPT), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "NAME<TAB>REF<TAB>ARCHIVE" in helped.stdout
    bad = subprocess.run([str(images.SCRIPT), "bulid"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown command: bulid" in bad.stderr
    unknown = subprocess.run([str(images.SCRIPT), "build", "nginx"], capture_output=True, text=True)
    assert unknown.returncode != 0 and "unknown image: nginx" in unknown.stderr


def test_a_missing_builder_is_named_with_its_package(tmp_path: Path) -> None:
    for tool in Path("/usr/bin").iterdir():  # this PATH has every tool but buildah
        if tool.name != "buildah":
            (tmp_path / tool.name).symlink_to(tool)
    result = subprocess.run(["/bin/bash", str(images.SCRIPT), "build"], capture_output=True, text=True,
                            env={**os.environ, "PATH": str(tmp_path)})
    assert result.returncode == 1
    assert "buildah not found: install it (Debian: apt-get install -y buildah)" in result.stderr


# --- built images ------------------------------------------------------------

def test_every_image_is_an_archive_that_imports_under_its_ref(node_images: dict[str, Image]) -> None:
    assert {name: node_images[name].ref for name in EXPECTED_REFS} == EXPECTED_REFS
    for image in node_images.values():
        archive = Archive.read(image.archive)
        assert archive.ref == image.ref  # the name `ctr images import` gives it
        assert archive.config["os"] == "linux" and archive.config["architecture"] == "amd64"


def rig_bin_dir() -> Path:
    out = subprocess.run([str(REPO / "rig" / "build.sh"), "--print-bin-dir"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def test_containerd_imports_every_archive_under_its_ref(node_images: dict[str, Image]) -> None:
    """What the node does with them: `ctr -n k8s.io images import ARCHIVE`, on the rig's containerd."""
    bins = rig_bin_dir()
    if not (bins / "containerd").exists() or not (bins / "ctr").exists():
        pytest.skip(f"containerd and ctr are not built yet in {bins} (rig/build.sh)")
    workdir = Path(tempfile.mkdtemp(prefix="sk-ctr-"))  # short: the socket path has a length limit
    socket_path = workdir / "containerd.sock"
    (workdir / "config.toml").write_text(f"""version = 3
root = "{workdir}/root"
state = "{workdir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images",
                    "io.containerd.nri.v1.nri"]
[grpc]
  address = "{socket_path}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{workdir}/opt"
""")
    with (workdir / "containerd.log").open("w") as log:
        daemon = subprocess.Popen([str(bins / "containerd"), "--config", str(workdir / "config.toml")],
                                  stdout=log, stderr=subprocess.STDOUT)
    ctr = [str(bins / "ctr"), "--address", str(socket_path), "--namespace", "k8s.io"]
    try:
        wait_for(lambda: socket_path.exists() or daemon.poll() is not None, "containerd did not start")
        assert daemon.poll() is None, (workdir / "containerd.log").read_text()
        for image in node_images.values():
            imported = subprocess.run([*ctr, "images", "import", str(image.archive)],
                                      capture_output=True, text=True, timeout=300)
            assert imported.returncode == 0, imported.stderr
        listed = subprocess.run([*ctr, "images", "ls", "-q"], capture_output=True, text=True, check=True).stdout
        assert {image.ref for image in node_images.values()} <= set(listed.split())
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        shutil.rmtree(workdir)


def test_a_second_build_takes_every_image_from_the_cache(node_images: dict[str, Image]) -> None:
    def build() -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(images.SCRIPT), "build", *node_images], capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr
        return result

    build()  # catches up with any source edited since the session's build
    again = build()
    assert images.parse_build_output(again.stdout) == node_images
    assert "building" not in again.stderr
    for name in node_images:
        assert f"{name}: cached" in again.stderr


@pytest.mark.parametrize("name", PROJECT_IMAGES)
def test_project_images_run_as_uid_65532(node_images: dict[str, Image], working: dict[str, str], name: str) -> None:
    assert Archive.read(node_images[name].archive).config["config"]["User"] == "65532:65532"
    assert probe_modules(working[name])["uid"] == [65532, 65532]


@pytest.mark.parametrize("name", ["nanoservice", "operator"])
def test_pip_check_passes(working: dict[str, str], name: str) -> None:
    # The operator's virtualenv has no pip of its own: the base's pip checks it.
    command = (("python", "-m", "pip", "check") if name == "nanoservice" else
               ("/usr/local/bin/python3", "-m", "pip", "--python", "/opt/simiankube/bin/python", "check"))
    result = run_in(working[name], *command)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No broken requirements found" in result.stdout


def test_operator_image_holds_the_operator_and_no_test_harness_or_compilers(
        node_images: dict[str, Image], working: dict[str, str]) -> None:
    found = probe_modules(working["operator"], "simiankube.operator", "kopf", "kubernetes_asyncio",
                          "simiankube.testing", "pytest", "pytest_aiohttp", "mypy", "jsonschema")
    assert found["modules"] == {"simiankube.operator": True, "kopf": True, "kubernetes_asyncio": True,
                                "simiankube.testing": False, "pytest": False, "pytest_aiohttp": False,
                                "mypy": False, "jsonschema": False}
    assert found["tools"] == dict.fromkeys(("gcc", "cc", "c++", "g++", "clang", "make", "ld", "as"))
    config = Archive.read(node_images["operator"].archive).config["config"]
    assert config["Entrypoint"] == ["simiankube", "operator"]
    helped = run_in(working["operator"], *config["Entrypoint"], "--help")
    assert helped.returncode == 0 and "--nanoservice-image" in helped.stdout, helped.stderr


def test_nanoservice_image_has_no_operator_dependencies(working: dict[str, str]) -> None:
    found = probe_modules(working["nanoservice"], "simiankube.nanoservice", "aiohttp", "uvloop",
                          "prometheus_client", "yaml", "kopf", "kubernetes_asyncio", "simiankube.testing", "pytest")
    assert found["modules"] == {"simiankube.nanoservice": True, "aiohttp": True, "uvloop": True,
                                "prometheus_client": True, "yaml": True, "kopf": False,
                                "kubernetes_asyncio": False, "simiankube.testing": False, "pytest": False}
    assert found["tools"] == dict.fromkeys(("gcc", "cc", "c++", "g++", "clang", "make", "ld", "as"))


def children(pid: int) -> list[int]:
    """The process's children, whichever of its threads started them (buildah is a Go program)."""
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def descendants(pid: int) -> list[int]:
    found = children(pid)
    return found + [d for child in found for d in descendants(child)]


def runs(pid: int, argv: list[str]) -> bool:
    """Whether the process runs this command (argv[0] as the path it resolved to)."""
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    return bool(args) and args[0].endswith(f"/{argv[0]}") and args[1:] == argv[1:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except OSError:
        return None


def test_nanoservice_image_serves_healthz_and_stops_on_sigterm(
        node_images: dict[str, Image], working: dict[str, str], tmp_path: Path) -> None:
    image = node_images["nanoservice"]
    objects = render(expand(load_file(REPO / "architectures" / "lamp.yaml")), RenderSettings())
    config_map = next(o for o in objects if o["kind"] == "ConfigMap")
    (tmp_path / contract.CONFIG_KEY).write_text(config_map["data"][contract.CONFIG_KEY])
    tmp_path.chmod(0o755)
    port = free_port()
    entrypoint = Archive.read(image.archive).config["config"]["Entrypoint"]
    name = working["nanoservice"]
    server = subprocess.Popen(
        run_args(name, *entrypoint, env={contract.ENV_LISTEN: f"127.0.0.1:{port}", contract.ENV_INSTANCE: "probe-0"},
                 volumes=(f"{tmp_path}:{contract.CONFIG_DIR}:ro",)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while http_status(f"http://127.0.0.1:{port}/healthz") != 200:
            assert server.poll() is None, f"the nanoservice exited {server.returncode}: {server.communicate()[0]}"
            assert time.monotonic() < deadline, "no /healthz 200 within 60 s"
            time.sleep(0.2)
        # As the kubelet does, signal the container's process itself (buildah
        # would SIGKILL it): aiohttp drains, exits 0, and buildah with it.
        (nanoservice,) = [pid for pid in descendants(server.pid) if runs(pid, entrypoint)]
        os.kill(nanoservice, signal.SIGTERM)
        assert server.wait(timeout=30) == 0, server.communicate()[0]
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert http_status(f"http://127.0.0.1:{port}/healthz") is None




def wait_for(condition: Callable[[], bool], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.skipif(os.geteuid() != 0, reason="a PID namespace needs root")
def test_pause_reaps_orphans_as_pid_1_and_exits_0_on_sigterm(node_images: dict[str, Image], tmp_path: Path) -> None:
    archive = Archive.read(node_images["pause"].archive)
    assert archive.config["config"]["Entrypoint"] == ["/pause"] and archive.config["config"]["User"] == "65535:65535"
    pause = extract_file(node_images["pause"].archive, "/pause", tmp_path / "pause")
    pause.chmod(0o755)
    assert subprocess.run([str(pause), "-v"], capture_output=True, text=True, check=True).stdout.startswith("pause")
    # sh is PID 1 of a new PID namespace; its subshell leaves an orphan `sleep`
    # (re-parented to PID 1), then sh becomes pause, which must reap it.
    sandbox = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "sh", "-c",
                                f"(sleep 1 &); exec {pause}"])
    try:
        wait_for(lambda: len(children(sandbox.pid)) == 1, "unshare did not fork PID 1")
        (pid1,) = children(sandbox.pid)
        wait_for(lambda: os.readlink(f"/proc/{pid1}/exe") == str(pause), "PID 1 never became pause")
        wait_for(lambda: children(pid1) != [], "the orphan never reached PID 1")
        (orphan,) = children(pid1)
        assert Path(f"/proc/{orphan}/comm").read_text().strip() == "sleep"
        wait_for(lambda: children(pid1) == [], "pause left the exited orphan a zombie")
        os.kill(pid1, signal.SIGTERM)
        assert sandbox.wait(timeout=10) == 0
    finally:
        if sandbox.poll() is None:
            sandbox.kill()
            sandbox.wait()


def test_coredns_image_runs_the_pinned_binary(node_images: dict[str, Image], tmp_path: Path) -> None:
    version = versions_env().get("COREDNS_VERSION")
    if "coredns" not in node_images:
        pytest.skip(f"no CoreDNS image: COREDNS_VERSION={version or 'unset'} in rig/versions.env, or the binary "
                    "is not built yet (rig/build.sh)")
    image = node_images["coredns"]
    assert image.ref == f"registry.k8s.io/coredns/coredns:{version}"
    assert Archive.read(image.archive).config["config"]["Entrypoint"] == ["/coredns"]
    binary = extract_file(image.archive, "/coredns", tmp_path / "coredns")
    binary.chmod(0o755)
    out = subprocess.run([str(binary), "-version"], capture_output=True, text=True, check=True).stdout
    assert f"CoreDNS-{str(version).removeprefix('v')}" in out
