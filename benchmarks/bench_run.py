"""`simiankube run` of netflixoss at 100 % (or a generated architecture): requests served per second and peak memory.

    .venv/bin/python benchmarks/bench_run.py [--duration 15] [--interval-ms 10] [--generate 480] [--nice -5]

`--generate N` runs `simiankube generate --services N --seed 1` instead (480
services are about 1,000 instances).

Prints the user request rate of the traffic source, the requests all services
served per second (every hop counts), calls between services per user
request, the p50/p99 the users saw, the CPU all processes spent per request
served (the steady figure on a shared machine; the load average is printed
with it), and the peak RSS of all processes.

The run's processes get --nice (default -5, needs root), and so do their
autogroups (each worker keeps the runner's niceness for its own session): on
a machine other jobs share, at nice 0 every session gets an equal share of a
CPU, and the processes of the run then spent more time waiting for a CPU than
running (the "waiting for a CPU" figure says how much).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_overload import set_niceness  # noqa: E402

GOAL_CALLS = 3000  # calls/s between services that 1,000 local instances on 2 cores should sustain (issue 14)
ARCHITECTURE = Path(__file__).resolve().parents[1] / "architectures" / "spigo" / "netflixoss_arch.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="15")
    parser.add_argument("--interval-ms", type=float, default=10.0, help="traffic tick (spigo default 10 ms)")
    parser.add_argument("--zipkin", action="store_true", help="export spans too (default off)")
    parser.add_argument("--generate", type=int, metavar="N", default=0,
                        help="run a generated architecture of N services instead of netflixoss")
    parser.add_argument("--nice", type=int, default=-5, help="niceness of the run's processes and their autogroups")
    args = parser.parse_args()
    print(set_niceness(args.nice), flush=True)
    if args.generate:
        from simiankube.model.generate import generate

        resource = generate(args.generate, seed=1)
        resource["spec"]["traffic"] = {**resource["spec"].get("traffic", {}), "intervalMs": args.interval_ms}
    else:
        document = json.loads(ARCHITECTURE.read_text())
        resource = {
            "apiVersion": "simiankube.io/v1alpha1", "kind": "Architecture", "metadata": {"name": "netflixoss"},
            "spec": {**{k: v for k, v in document.items() if k in ("arch", "description", "version", "victim")},
                     "services": document["services"], "traffic": {"intervalMs": args.interval_ms}},
        }
    load_before = Path("/proc/loadavg").read_text().split()[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "netflixoss.json"
        path.write_text(json.dumps(resource))
        zipkin = str(Path(tmp) / "spans.jsonl") if args.zipkin else ""
        result = subprocess.run(
            [sys.executable, "-m", "simiankube.cli", "run", str(path), "--duration", args.duration, "--no-chaos",
             "--zipkin-file", zipkin, "-o", "json"],
            capture_output=True, text=True, check=True,
        )
    load_after = Path("/proc/loadavg").read_text().split()[0]
    report = json.loads(result.stdout)
    served = sum(s["requests"] for s in report["services"].values())
    [traffic] = report["traffic"]
    print(f"{report['architecture']}: {report['instances']} instances in {report['processes']} processes, "
          f"{report['duration_s']:.1f} s, traffic tick {args.interval_ms:g} ms, spans {'on' if args.zipkin else 'off'}")
    print(f"user requests: {traffic['requests_per_second']:.0f}/s, errors {traffic['errors']}, "
          f"p50 {traffic['p50_ms']} ms, p99 {traffic['p99_ms']} ms")
    print(f"requests served by all services: {served / report['duration_s']:.0f}/s "
          f"({report['calls_per_user_request']} calls between services per user request)")
    per_request = report["cpu_us_per_request"] or 0.0
    print(f"CPU while traffic ran: {report['cpu_s']:.1f} s of {report['duration_s'] * (os.cpu_count() or 1):.0f} s "
          f"on {os.cpu_count()} cores, {report['cpu_wait_s']:.1f} s more waiting for a CPU (load average "
          f"{load_before} before, {load_after} after: other jobs share them), {per_request:.0f} us per request "
          f"served; at that cost {GOAL_CALLS:,} calls/s need "
          f"{GOAL_CALLS * per_request / 1e6:.1f} cores")
    print(f"peak memory: {report['peak_rss_mib']:.0f} MiB RSS (all processes); "
          f"{report['timeout_share'] or 0:.1%} of user requests timed out")


if __name__ == "__main__":
    main()
