"""The layout is the architecture: one direction of imports, a pure core, every package installed.

Layers, lowest first: contract → model → render → segmentation → (localrun, operator) → cli.
The nanoservice sees only the shared contract. Checked on the source, so a new upward import
fails here before it fails anywhere else.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where each portion of the `simiankube` namespace package lives in the checkout.
PORTIONS = (ROOT, ROOT / "operator", ROOT / "nanoservice")

# Which parts of simiankube each part may import (its own modules always).
MAY_IMPORT: dict[str, set[str]] = {
    "contract": set(),
    "model": {"contract"},
    "render": {"contract", "model"},
    "segmentation": {"contract", "model", "render"},
    "nanoservice": {"contract"},
    "localrun": {"contract", "model", "render", "segmentation", "nanoservice"},
    "operator": {"contract", "model", "render", "segmentation"},
    "ui": {"contract", "model", "render", "segmentation", "localrun"},
    "cli": {"contract", "model", "render", "segmentation", "localrun", "operator", "ui"},
    "testing": set(),
}
# Third-party packages that make a module I/O-bound or framework-bound.
FRAMEWORKS = {"aiohttp", "kopf", "kubernetes", "kubernetes_asyncio", "prometheus_client", "uvloop", "multidict"}
# The pure core may use none of them; `segmentation.kube` is that concern's edge to the API server.
PURE = {"contract", "model", "render", "segmentation"}
EDGES = {"simiankube.segmentation.kube"}
# Pure modules of parts that also have I/O: the live view's figures are computed without any.
PURE_MODULES = {"simiankube.ui.view"}
# The only operator modules that may talk to the API server or use kopf.
OPERATOR_API = {"simiankube.operator.kube"}
OPERATOR_KOPF = {"simiankube.operator.handlers", "simiankube.operator.controller", "simiankube.operator.cli"}


def modules() -> Iterator[tuple[str, Path]]:
    for portion in PORTIONS:
        for path in sorted((portion / "simiankube").rglob("*.py")):
            parts = path.relative_to(portion).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def part_of(module: str) -> str:
    return module.split(".")[1]


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "simiankube":
                names.update(f"simiankube.{alias.name}" for alias in node.names)
    return names


ALL = sorted(modules())


def test_every_part_has_a_rule() -> None:
    assert {part_of(name) for name, _ in ALL} == set(MAY_IMPORT)


@pytest.mark.parametrize(("module", "path"), ALL, ids=[name for name, _ in ALL])
def test_imports_point_down(module: str, path: Path) -> None:
    own = part_of(module)
    upward = {
        name for name in imported(path)
        if name.startswith("simiankube.") and part_of(name) not in MAY_IMPORT[own] | {own}
    }
    assert not upward, f"{module} imports {sorted(upward)}; {own} may import only {sorted(MAY_IMPORT[own])}"


@pytest.mark.parametrize(("module", "path"), ALL, ids=[name for name, _ in ALL])
def test_frameworks_stay_at_the_edges(module: str, path: Path) -> None:
    third_party = {name.split(".")[0] for name in imported(path)} & FRAMEWORKS
    if (part_of(module) in PURE and module not in EDGES) or module in PURE_MODULES:
        assert not third_party, f"{module} is pure core but imports {sorted(third_party)}"
    if part_of(module) == "nanoservice":
        assert not third_party & {"kopf", "kubernetes", "kubernetes_asyncio"}, module
    if part_of(module) == "operator":
        if module not in OPERATOR_API:
            assert "kubernetes_asyncio" not in third_party, f"only {OPERATOR_API} talks to the API server"
        if module not in OPERATOR_KOPF:
            assert "kopf" not in third_party, f"kopf stays in {sorted(OPERATOR_KOPF)}"
            assert "@kopf." not in path.read_text(), "every kopf decorator lives in handlers"


# Test support, importable from the checkout (editable install) but shipped in no wheel or image.
CHECKOUT_ONLY = "simiankube.testing"


def test_every_package_is_installed() -> None:
    """pyproject lists packages one by one (the namespace spans three folders): none may be missing."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {name for name, path in ALL if path.name == "__init__.py"}
    on_disk.discard("simiankube")
    harness = {name for name in on_disk if name == CHECKOUT_ONLY or name.startswith(f"{CHECKOUT_ONLY}.")}
    assert harness, f"{CHECKOUT_ONLY} moved: update CHECKOUT_ONLY"
    assert not harness & listed, f"the test harness must stay out of the wheel: {sorted(harness & listed)}"
    on_disk -= harness
    assert on_disk <= listed, f"add to pyproject's packages: {sorted(on_disk - listed)}"
    assert listed - {"simiankube"} <= on_disk, f"listed but not on disk: {sorted(listed - on_disk - {'simiankube'})}"
