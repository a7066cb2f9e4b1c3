"""The operator's layering, checked: one API module, kopf only at the edges."""

from __future__ import annotations

import ast
from pathlib import Path

OPERATOR = Path(__file__).resolve().parents[2] / "operator" / "simiankube_operator"
# Modules that may import kopf: the handlers, the services they call, the CLI that runs kopf.
KOPF_EDGE = {"handlers", "controller", "cli"}


def imports(module: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_kube_talks_to_the_api_server() -> None:
    users = {m.stem for m in OPERATOR.glob("*.py") if "kubernetes_asyncio" in imports(m)}
    assert users == {"kube"}


def test_kopf_stays_at_the_edges() -> None:
    users = {m.stem for m in OPERATOR.glob("*.py") if "kopf" in imports(m)}
    assert users <= KOPF_EDGE, users - KOPF_EDGE


def test_all_kopf_decorators_live_in_handlers() -> None:
    for module in OPERATOR.glob("*.py"):
        if module.stem != "handlers":
            assert "@kopf." not in module.read_text(), module.name
