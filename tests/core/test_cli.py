"""The command line as a user runs it: real subprocesses, exit codes, output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.core.paths import DATA, ROOT, SPIGO


def simiankube(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simiankube.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", ["validate", "render", "import", "generate"])
def test_help(command: str) -> None:
    result = simiankube(command, "--help")
    assert result.returncode == 0
    assert "usage: simiankube" in result.stdout


def test_version() -> None:
    result = simiankube("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("simiankube 0.")


def test_validate_good_and_bad() -> None:
    ok = simiankube("validate", str(SPIGO / "netflixoss_arch.json"), "--regions", "2")
    assert ok.returncode == 0, ok.stderr
    assert "valid: 8 services, 129 instances in 15 workloads" in ok.stdout
    report = json.loads(simiankube("validate", str(SPIGO / "lamp_arch.json"), "-o", "json").stdout)
    assert report["instances"] == 23 and report["valid"] is True
    bad = simiankube("validate", str(DATA / "testMissingDep_arch.json"))
    assert bad.returncode == 1
    assert 'services[3].dependencies[0]: unknown service "signup-nodes"' in bad.stderr
    assert bad.stdout == ""
    missing = simiankube("validate", "/nonexistent/arch.yaml")
    assert missing.returncode == 1
    assert "cannot read file" in missing.stderr
    usage = simiankube("validate")
    assert usage.returncode == 2


def test_validate_rejects_clashing_object_names(tmp_path: Path) -> None:
    path = tmp_path / "clash.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "simiankube.io/v1alpha1", "kind": "Architecture", "metadata": {"name": "shop"},
        "spec": {"arch": "shop", "services": [{"name": "db", "package": "store"},
                                              {"name": "db-peers", "package": "store"}]},
    }))
    result = simiankube("validate", str(path))
    assert result.returncode == 1
    assert 'services[1].name: "db-peers" renders the Service "shop-db-peers"' in result.stderr
    assert result.stdout == ""


def test_render_outputs_yaml_and_json() -> None:
    as_json = json.loads(simiankube("render", str(ROOT / "architectures/lamp.yaml"), "-n", "x", "-o", "json").stdout)
    as_yaml = list(yaml.safe_load_all(simiankube("render", str(ROOT / "architectures/lamp.yaml"), "-n", "x").stdout))
    assert as_json == as_yaml
    assert {o["metadata"]["namespace"] for o in as_json} == {"x"}
    scaled = json.loads(simiankube("render", str(SPIGO / "lamp_arch.json"), "--scale", "50", "-o", "json").stdout)
    webserver = next(o for o in scaled if o["kind"] == "Deployment" and "webserver-us" in o["metadata"]["name"])
    assert webserver["spec"]["replicas"] == 9


def test_import_then_validate(tmp_path: Path) -> None:
    result = simiankube("import", str(SPIGO / "netflixoss_arch.json"))
    assert result.returncode == 0
    resource = yaml.safe_load(result.stdout)
    assert resource["kind"] == "Architecture" and resource["metadata"]["name"] == "netflixoss"
    path = tmp_path / "netflixoss.yaml"
    path.write_text(result.stdout)
    assert "65 instances" in simiankube("validate", str(path)).stdout


def test_generate_to_file(tmp_path: Path) -> None:
    path = tmp_path / "gen.yaml"
    result = simiankube("generate", "--services", "50", "--seed", "4", "--file", str(path))
    assert result.returncode == 0
    assert f"wrote {path}: 50 services" in result.stderr
    assert "50 services" in simiankube("validate", str(path)).stdout
    assert simiankube("generate", "--services", "2").returncode == 2


def test_cycle_warning_goes_to_stderr(tmp_path: Path) -> None:
    path = tmp_path / "cycle.json"
    path.write_text(json.dumps({"arch": "c", "services": [
        {"name": "a", "package": "staash", "count": 1, "regions": 1, "dependencies": ["b"]},
        {"name": "b", "package": "store", "count": 1, "regions": 1, "dependencies": ["a"]}]}))
    result = simiankube("validate", str(path))
    assert result.returncode == 0
    assert "warning: services: dependency cycle a -> b -> a" in result.stderr


def without(packages: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a process where `packages` cannot be imported, as with only the core installed."""
    block = "; ".join(f"sys.modules[{name!r}] = None" for name in packages)
    code = f"import sys; {block}; from simiankube.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


CORE_ONLY = ["aiohttp", "prometheus_client", "uvloop", "kopf", "kubernetes_asyncio"]


def test_core_install_runs_the_offline_commands() -> None:
    result = without(CORE_ONLY, "validate", str(ROOT / "architectures" / "lamp.yaml"))
    assert result.returncode == 0, result.stderr
    assert "valid: 5 services" in result.stdout


@pytest.mark.parametrize(("args", "extra"), [
    (["run", "architectures/lamp.yaml"], "nanoservice"),
    (["operator"], "operator"),
    (["verify", "lamp"], "operator"),
])
def test_a_command_without_its_extra_says_what_to_install(args: list[str], extra: str) -> None:
    result = without(CORE_ONLY, *args)
    assert result.returncode == 3, result.stderr
    assert f"pip install 'simiankube[{extra}]'" in result.stderr
    assert "Traceback" not in result.stderr
    listing = without(CORE_ONLY, "--help")
    assert args[0] in listing.stdout and "not installed" in listing.stdout
