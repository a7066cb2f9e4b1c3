"""The wheel users install: every package and its data, and none of the test harness."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """Built as a user's `pip wheel .` builds it: from the declared build requirements only."""
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = out.glob("simiankube-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_holds_every_listed_package_and_its_data(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for package in packages:
        folder = package.replace(".", "/")
        assert any(n.startswith(f"{folder}/") and n.endswith(".py") for n in names), f"{package} not in the wheel"
    assert "simiankube/operator/crd.yaml" in names
    assert any(n.startswith("simiankube/ui/static/") for n in names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_the_wheel_carries_no_test_harness(wheel: zipfile.ZipFile) -> None:
    harness = [n for n in wheel.namelist() if n.startswith("simiankube/testing/")]
    assert not harness, f"test support shipped to users: {harness}"
    assert (ROOT / "simiankube" / "testing" / "operator.py").is_file()  # it exists, in the checkout


def test_the_checkout_still_imports_the_harness() -> None:
    """The editable install (scripts/bootstrap.sh) serves the tests and benchmarks from the checkout."""
    probe = subprocess.run([sys.executable, "-c", "import simiankube.testing.operator as m; print(m.__file__)"],
                           capture_output=True, text=True, cwd="/", timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()) == ROOT / "simiankube" / "testing" / "operator.py"
