"""The locks under requirements/ agree with pyproject.toml (scripts/lock.sh writes them)."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.test_layout import ALL, imported, part_of

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# lock file → the extras it was resolved for
LOCKS = {"nanoservice": ["nanoservice"], "operator": ["operator"], "dev": ["all", "test"]}


def pinned(lock: str) -> dict[str, str]:
    text = (ROOT / "requirements" / f"{lock}.txt").read_text()
    return {canonicalize_name(name): version for name, version in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, re.M)}


def declared(extras: list[str]) -> list[Requirement]:
    """The project's own requirements for these extras, self-references (simiankube[all]) expanded."""
    requirements = [Requirement(text) for text in PROJECT["dependencies"]]
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in PROJECT["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == "simiankube":
                pending.extend(requirement.extras)
            else:
                requirements.append(requirement)
    return requirements


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_declared_requirement_is_locked_within_its_range(lock: str) -> None:
    pins = pinned(lock)
    for requirement in declared(LOCKS[lock]):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"requirements/{lock}.txt lacks {name}: run scripts/lock.sh"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements/{lock}.txt pins {name}=={pins[name]}, pyproject asks {requirement}: run scripts/lock.sh")


def test_locks_have_hashes() -> None:
    for lock in LOCKS:
        text = (ROOT / "requirements" / f"{lock}.txt").read_text()
        assert text.count("==") <= text.count("--hash=sha256:"), lock


def test_the_nanoservice_lock_has_no_kubernetes_client() -> None:
    assert not {"kopf", "kubernetes-asyncio", "kubernetes"} & set(pinned("nanoservice"))


def test_the_images_install_from_their_lock() -> None:
    for component in ("nanoservice", "operator"):
        dockerfile = (ROOT / component / "Dockerfile").read_text()
        assert f"requirements/{component}.txt" in dockerfile
        assert f"'simiankube[{component}]'" in dockerfile
        assert "--no-index" in dockerfile and "pip check" in dockerfile


# The extra that installs each part: an image gets only its component's extra, so each part may import only
# what that extra (or the core's own dependencies) declares — not what comes along with a dependency.
EXTRA_OF_PART = {"nanoservice": ["nanoservice"], "operator": ["operator"], "testing": ["all", "test"]}
DISTRIBUTIONS = packages_distributions()  # import name -> the installed distributions providing it


@pytest.mark.parametrize(("module", "path"), ALL, ids=[name for name, _ in ALL])
def test_every_third_party_import_is_declared(module: str, path: Path) -> None:
    allowed = {canonicalize_name(r.name) for r in declared(EXTRA_OF_PART.get(part_of(module), ["all"]))}
    top_level = {name.split(".")[0] for name in imported(path)} - set(sys.stdlib_module_names) - {"simiankube"}
    for name in sorted(top_level):
        providers = {canonicalize_name(d) for d in DISTRIBUTIONS.get(name, [name])}
        assert providers & allowed, (
            f"{module} imports {name} (from {sorted(providers)}), which its extra does not declare: "
            "add it to pyproject.toml and run scripts/lock.sh")
