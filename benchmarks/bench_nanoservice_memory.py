"""Where a nanoservice process's memory goes: RSS after each import stage, and what two variants would save.

    .venv/bin/python benchmarks/bench_nanoservice_memory.py

Each stage runs in a fresh interpreter that imports the modules of every stage
up to it and prints its VmRSS, so a row is the cumulative cost (shared
libraries count in RSS as the kubelet's process view sees them). Variants:
"no OpenSSL" keeps `ssl` and `_hashlib` from loading (a nanoservice speaks
plain HTTP; hashlib falls back to its built-in digests), which uvloop cannot
do without (it imports ssl unconditionally), so that variant also runs on
asyncio's own loop. The served figure (after startup and a load run) is
`bench_nanoservice.py`'s "server RSS" line; this script shows what it is made of.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

STAGES = (
    ("bare Python", []),
    ("+ asyncio (it imports ssl: OpenSSL)", ["asyncio"]),
    ("+ aiohttp (its __init__ imports the client)", ["aiohttp"]),
    ("+ aiohttp.web", ["aiohttp.web"]),
    ("+ uvloop", ["uvloop"]),
    ("+ the nanoservice (simiankube.nanoservice.launch)", ["simiankube.nanoservice.launch"]),
)
NO_OPENSSL = ("ssl", "_hashlib")
SERVING_WITHOUT_UVLOOP = ["asyncio", "aiohttp", "aiohttp.web", "simiankube.nanoservice.app"]
PROBE = """
import importlib, sys
for name in sys.argv[2].split(",") if sys.argv[2] else []:
    sys.modules[name] = None  # blocked: an import of it fails as if it were not installed
for name in sys.argv[1].split(",") if sys.argv[1] else []:
    importlib.import_module(name)
rss = next(line for line in open("/proc/self/status") if line.startswith("VmRSS:"))
print(int(rss.split()[1]) / 1024, len(sys.modules))
"""


def rss_after(modules: list[str], blocked: tuple[str, ...] = ()) -> tuple[float, int]:
    """(VmRSS in MiB, modules loaded) of a fresh interpreter after importing `modules`."""
    out = subprocess.run([sys.executable, "-c", PROBE, ",".join(modules), ",".join(blocked)],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1])


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    modules: list[str] = []
    previous = 0.0
    for label, more in STAGES:
        modules += more
        rss, count = rss_after(modules)
        print(f"{label:52s} {rss:5.1f} MiB ({rss - previous:+5.1f}), {count} modules")
        previous = rss
    shipped = previous
    for label, blocked in (("asyncio's loop instead of uvloop", ()), ("... and no OpenSSL", NO_OPENSSL)):
        rss, count = rss_after(SERVING_WITHOUT_UVLOOP, blocked)
        print(f"variant: {label:43s} {rss:5.1f} MiB ({rss - shipped:+5.1f} vs as shipped), {count} modules")


if __name__ == "__main__":
    main()
