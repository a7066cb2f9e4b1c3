"""Validate + render speed and memory for generated architectures.

Target: 10,000 services validated and rendered in under 1 s, wall and CPU (process_time). Each size runs
in a fresh subprocess so its peak RSS is its own. Usage: python benchmarks/bench_render.py [SIZES...]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
import tracemalloc


def measure(size: int) -> dict[str, float]:
    import yaml

    from simiankube.model.generate import generate
    from simiankube.render import RenderSettings, render
    from simiankube.model.spec import parse_text
    from simiankube.model.topology import expand

    text = yaml.safe_dump(generate(size, seed=1), sort_keys=False)
    as_json = json.dumps(generate(size, seed=1))
    start, start_cpu = time.perf_counter(), time.process_time()
    arch = parse_text(as_json)
    parsed, parsed_cpu = time.perf_counter(), time.process_time()
    topology = expand(arch)
    objects = render(topology, RenderSettings())
    done, done_cpu = time.perf_counter(), time.process_time()
    tracemalloc.start()  # a second, traced pass: tracing slows the first one several times over
    render(expand(parse_text(as_json)), RenderSettings())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    yaml_start = time.perf_counter()
    parse_text(text)
    yaml_parse = time.perf_counter() - yaml_start
    return {
        "services": size,
        "instances": len(topology.instances),
        "objects": len(objects),
        "validate_s": round(parsed - start, 3),
        "validate_cpu_s": round(parsed_cpu - start_cpu, 3),
        "render_s": round(done - parsed, 3),
        "render_cpu_s": round(done_cpu - parsed_cpu, 3),
        "total_s": round(done - start, 3),
        "total_cpu_s": round(done_cpu - start_cpu, 3),
        "yaml_parse_s": round(yaml_parse, 3),
        "peak_traced_mib": round(peak / 2**20, 1),
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(json.dumps(measure(int(sys.argv[2]))))
        return
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 10000]
    print(f"{'services':>9} {'instances':>9} {'objects':>8} {'validate':>9} {'(cpu)':>7} {'render':>8} {'(cpu)':>7} "
          f"{'total':>8} {'(cpu)':>7} {'yaml-parse':>10} {'peak-heap':>10} {'max-rss':>8}")
    for size in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(size)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout)
        print(f"{r['services']:>9} {r['instances']:>9} {r['objects']:>8} {r['validate_s']:>8}s {r['validate_cpu_s']:>6}s "
              f"{r['render_s']:>7}s {r['render_cpu_s']:>6}s {r['total_s']:>7}s {r['total_cpu_s']:>6}s "
              f"{r['yaml_parse_s']:>9}s {r['peak_traced_mib']:>7}MiB {r['max_rss_mib']:>5}MiB")
    print("target: 10,000 services validated + rendered in under 1 s (render = expand + render; on a shared machine "
          "the CPU time is the steadier figure)")


if __name__ == "__main__":
    main()
