"""Fixtures of the image tests: the images, built once per session by rig/images.sh.

Building is slow cold (the stand-in base is made with mmdebstrap, the project's
images with buildah), so every test that uses ``node_images`` is marked
``images``, marked or not: skip them in a quick loop with ``-m "not images"``.
"""

from __future__ import annotations

import contextlib
import sys

import pytest

from simiankube.testing import images
from simiankube.testing.images import Image, ImageError


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        'images: builds the container images with rig/images.sh (slow cold). Skip with -m "not images".',
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "node_images" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.images)


@pytest.fixture(scope="session")
def node_images(pytestconfig: pytest.Config) -> dict[str, Image]:
    """Every image rig/images.sh can build here, by name (progress goes to the terminal)."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        try:
            return images.build(stderr=sys.stderr)
        except ImageError as error:
            pytest.fail(f"building the images failed: {error}", pytrace=False)
