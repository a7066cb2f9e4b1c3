"""The real node's container images, from Python: build them and read their archives.

``rig/images.sh`` is the one place images are built (and cached); this module runs
it and parses its output, one ``NAME<TAB>REF<TAB>ARCHIVE`` line per image, and
reads the OCI archives it leaves (the files ``ctr -n k8s.io images import`` loads)
so tests can check what the node will actually run.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

SCRIPT = Path(__file__).resolve().parents[2] / "rig" / "images.sh"
REF_NAME = "org.opencontainers.image.ref.name"  # the annotation ctr import names an image by


class ImageError(RuntimeError):
    """rig/images.sh failed, or an archive is not what it should be."""


@dataclass(frozen=True)
class Image:
    name: str  # nanoservice, operator, pause, coredns
    ref: str  # the name the node knows it by, e.g. ghcr.io/simiankube/nanoservice:0.1.0
    archive: Path  # an OCI archive of the image


def parse_build_output(stdout: str) -> dict[str, Image]:
    """The images named in ``rig/images.sh build`` output, by name."""
    images: dict[str, Image] = {}
    for line in stdout.splitlines():
        fields = line.split("\t")
        if len(fields) != 3 or not all(fields):
            raise ImageError(f"rig/images.sh printed an unexpected line: {line!r}")
        name, ref, archive = fields
        images[name] = Image(name, ref, Path(archive))
    return images


def build(names: Sequence[str] = (), stderr: int | IO[str] | None = None) -> dict[str, Image]:
    """Build the named images (default: all that can be), or take them from the cache."""
    result = subprocess.run(
        [str(SCRIPT), "build", *names], stdout=subprocess.PIPE, stderr=stderr, text=True
    )
    if result.returncode != 0:
        raise ImageError(f"rig/images.sh build {' '.join(names)} exited {result.returncode}")
    return parse_build_output(result.stdout)


def buildah(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """buildah on the image store rig/images.sh builds into (output captured, not checked)."""
    return subprocess.run(
        [str(SCRIPT), "buildah", *args], capture_output=True, text=True, timeout=timeout
    )


def _member(layout: tarfile.TarFile, name: str) -> bytes:
    handle = layout.extractfile(name)
    if handle is None:
        raise ImageError(f"{name} is missing from the archive")
    return handle.read()


def _blob(layout: tarfile.TarFile, digest: str) -> bytes:
    algorithm, _, value = digest.partition(":")
    return _member(layout, f"blobs/{algorithm}/{value}")


def _manifest(layout: tarfile.TarFile) -> tuple[str, dict[str, Any]]:
    """The archive's one image: the name it imports as and its manifest."""
    (entry,) = json.loads(_member(layout, "index.json"))["manifests"]
    return entry.get("annotations", {}).get(REF_NAME, ""), json.loads(
        _blob(layout, entry["digest"])
    )


def _layers(layout: tarfile.TarFile, manifest: dict[str, Any]) -> list[tarfile.TarFile]:
    return [
        tarfile.open(fileobj=io.BytesIO(_blob(layout, layer["digest"])))
        for layer in manifest["layers"]
    ]


@dataclass(frozen=True)
class Archive:
    """What an OCI archive holds: the name it imports as, its configuration, its size."""

    ref: str
    config: dict[
        str, Any
    ]  # the image configuration; its "config" key holds User, Entrypoint, Env, ...
    unpacked_bytes: int  # the files in all layers, uncompressed

    @classmethod
    def read(cls, path: Path) -> Archive:
        with tarfile.open(path) as layout:
            ref, manifest = _manifest(layout)
            config = json.loads(_blob(layout, manifest["config"]["digest"]))
            unpacked = sum(
                info.size for layer in _layers(layout, manifest) for info in layer if info.isfile()
            )
        return cls(ref, config, unpacked)


def extract_file(path: Path, member: str, dest: Path) -> Path:
    """Copy one file out of an archived image (the topmost layer that has it wins)."""
    found: bytes | None = None
    with tarfile.open(path) as layout:
        for layer in _layers(layout, _manifest(layout)[1]):
            for info in layer:
                if info.isfile() and info.name.removeprefix("./") == member.removeprefix("/"):
                    found = _member(layer, info.name)
    if found is None:
        raise ImageError(f"{member} is not in {path}")
    dest.write_bytes(found)
    return dest
