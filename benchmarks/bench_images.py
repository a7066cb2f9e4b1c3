"""Image figures: cold and cached build times of the node's images, and their sizes.

    .venv/bin/python benchmarks/bench_images.py            # cold build in a fresh store, then cached
    .venv/bin/python benchmarks/bench_images.py --cached   # only the cached pass over ~/.cache/simiankube/images
    .venv/bin/python benchmarks/bench_images.py -o json

A cold build runs ``rig/images.sh build`` with an empty image directory (a
temporary SIMIANKUBE_IMAGES_DIR, removed afterwards): the stand-in base from
mmdebstrap, then each image; the seconds come from its progress lines. The
cached pass runs it again with nothing changed. Sizes: the OCI archive the
node imports, and the layers' files uncompressed (about what the node stores).
Needs buildah, mmdebstrap and go (rig/images.sh --help), network for Debian and PyPI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from simiankube.testing.images import SCRIPT, Archive, parse_build_output  # noqa: E402

BUILT = re.compile(r"\] (?P<name>[\w-]+): built in (?P<seconds>[\d.]+) s")


@dataclass(frozen=True)
class Figures:
    name: str
    ref: str
    cold_seconds: float | None  # None: not measured (--cached) or taken from the cache
    archive_mb: float
    unpacked_mb: float


def run_build(env: dict[str, str]) -> tuple[float, str, str]:
    """Seconds, stdout and stderr of one ``rig/images.sh build``."""
    start = time.perf_counter()
    result = subprocess.run([str(SCRIPT), "build"], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"rig/images.sh build failed:\n{result.stderr}")
    return seconds, result.stdout, result.stderr


def build_seconds(progress: str) -> dict[str, float]:
    """Per-step seconds from rig/images.sh's progress lines (the base is named "base")."""
    return {m["name"]: float(m["seconds"]) for m in BUILT.finditer(progress)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cached", action="store_true", help="skip the cold build; time the existing cache only")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    args = parser.parse_args()

    env = dict(os.environ)
    store: Path | None = None
    cold_total: float | None = None
    cold: dict[str, float] = {}
    if not args.cached:
        store = Path(tempfile.mkdtemp(prefix="sk-bench-images-"))
        env["SIMIANKUBE_IMAGES_DIR"] = str(store)
        print(f"cold build into {store} (a few minutes) ...", file=sys.stderr)
    try:
        if not args.cached:
            cold_total, _, progress = run_build(env)
            cold = build_seconds(progress)
        cached_total, stdout, progress = run_build(env)
        rebuilt = sorted(build_seconds(progress))
        images = parse_build_output(stdout)
        figures = []
        for image in images.values():
            archive = Archive.read(image.archive)
            figures.append(Figures(image.name, image.ref, cold.get(image.name), image.archive.stat().st_size / 2**20,
                                   archive.unpacked_bytes / 2**20))
    finally:
        if store is not None:
            subprocess.run([str(SCRIPT), "buildah", "rm", "--all"], env=env, capture_output=True)
            subprocess.run([str(SCRIPT), "buildah", "rmi", "--all", "--force"], env=env, capture_output=True)
            shutil.rmtree(store, ignore_errors=True)

    report = {
        "cold_total_seconds": cold_total,
        "cold_base_seconds": cold.get("base"),
        "cached_total_seconds": cached_total,
        "rebuilt_on_cached_pass": rebuilt,
        "images": [asdict(f) for f in figures],
    }
    if args.output == "json":
        print(json.dumps(report, indent=2))
        return
    if cold_total is not None:
        print(f"cold build, everything:     {cold_total:7.1f} s  (stand-in base {cold.get('base', 0):.1f} s)")
    print(f"cached build, everything:   {cached_total:7.1f} s  (rebuilt: {', '.join(rebuilt) or 'nothing'})")
    print(f"{'image':12} {'cold s':>7} {'archive MB':>11} {'unpacked MB':>12}  ref")
    for f in figures:
        cold_text = f"{f.cold_seconds:7.1f}" if f.cold_seconds is not None else "      -"
        print(f"{f.name:12} {cold_text} {f.archive_mb:11.1f} {f.unpacked_mb:12.1f}  {f.ref}")


if __name__ == "__main__":
    main()
