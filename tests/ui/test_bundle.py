"""The committed web bundle is what the source and its lockfile build: they cannot drift apart."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "ui"
STATIC = ROOT / "simiankube" / "ui" / "static"
BUILT = ("app.js", "app.js.LEGAL.txt")


@pytest.mark.npm
def test_npm_ci_and_build_reproduce_the_committed_bundle(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is needed to rebuild the bundle (Debian: nodejs npm)")
    work = tmp_path / "ui"
    work.mkdir()
    for name in ("package.json", "package-lock.json"):
        shutil.copy(SOURCE / name, work / name)
    shutil.copytree(SOURCE / "src", work / "src")
    (tmp_path / "simiankube" / "ui" / "static").mkdir(parents=True)  # where the build script writes
    for command in ([npm, "ci", "--no-audit", "--no-fund"], [npm, "run", "build"]):
        result = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr + result.stdout
    for name in BUILT:
        rebuilt = (tmp_path / "simiankube" / "ui" / "static" / name).read_bytes()
        assert rebuilt == (STATIC / name).read_bytes(), f"{name} differs: run `npm ci && npm run build` in ui/ and commit"


def test_the_page_loads_only_what_the_package_ships() -> None:
    """No CDN: every script and stylesheet of the page is a file under static/."""
    page = (STATIC / "index.html").read_text()
    assert "http://" not in page and "https://" not in page
    for name in ("app.js", "style.css"):
        assert f"/static/{name}" in page and (STATIC / name).is_file()
