"""A store nanoservice's memory under a stream of large puts: bounded in bytes, not only in keys.

    .venv/bin/python benchmarks/bench_store_memory.py [--puts 3000] [--value-bytes 60000]

Starts one `store` nanoservice as the pod entrypoint does (python -m simiankube.nanoservice), PUTs
distinct keys with large values and prints its RSS as the data written grows. The store keeps at most
64 MiB of keys and values (packages.MAX_BYTES), so the RSS levels off at about the starting RSS plus that,
however much is written.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from simiankube import contract
from simiankube.contract import Behavior, Latency, NanoserviceConfig
from simiankube.localrun.runner import pick_addresses
from simiankube.testing.wait import wait_for


def rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--puts", type=int, default=3000, help="distinct keys written (default 3000)")
    parser.add_argument("--value-bytes", type=int, default=60_000, help="bytes per value (default 60000)")
    args = parser.parse_args()

    config = NanoserviceConfig("bench", "db", "store", "us-east-1", Behavior(latency=Latency("constant", 0.0)), (),
                               None)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(config.to_json())
        [address] = pick_addresses(1)
        base = f"http://{address}:{contract.HTTP_PORT}"
        env = {**os.environ, contract.ENV_CONFIG: str(path), contract.ENV_INSTANCE: "db-0",
               contract.ENV_LISTEN: f"{address}:{contract.HTTP_PORT}"}
        process = subprocess.Popen([sys.executable, "-m", "simiankube.nanoservice"], env=env)
        try:
            wait_for(lambda: ready(f"{base}{contract.PATH_READY}"), 30, interval=0.05, message="store ready")
            print(f"start: RSS {rss_mib(process.pid)} MiB")
            value = b"x" * args.value_bytes
            marks = {args.puts * share // 4 for share in (1, 2, 3, 4)}
            for n in range(1, args.puts + 1):
                request = urllib.request.Request(f"{base}/kv/k{n}", data=value, method="PUT",
                                                 headers={"Content-Type": "text/plain"})
                with urllib.request.urlopen(request, timeout=10) as response:
                    response.read()
                if n in marks:
                    written = n * args.value_bytes / 2**20
                    print(f"{n} puts, {written:.0f} MiB written: RSS {rss_mib(process.pid)} MiB")
        finally:
            process.terminate()
            process.wait(20)


if __name__ == "__main__":
    main()
