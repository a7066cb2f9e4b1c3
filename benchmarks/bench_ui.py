"""The live view with 1,000 services: the cost of one update on the server and in the browser.

    .venv/bin/python benchmarks/bench_ui.py [--services 1000] [--seconds 15] [--no-browser]

Server side (Python): one scrape round of every instance (parse + rates), one frame (figures per
service, per edge, per region) and its JSON, the graph's JSON — all on synthetic /metrics texts
shaped like the nanoservices' (every edge of the generated architecture carries traffic).
Browser side (headless Chromium from Debian, as the tests): the page on that architecture while
frames arrive once a second; figures are the time `applyFrame` takes per frame (graph styles,
tables, timeline), the gaps between animation frames (a smooth page keeps them near 16.7 ms) and
the share of time the page's main thread was busy (Chrome's sampling profiler). On a machine
shared with other work the times swing with its load; report `uptime`'s load with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import threading
import time
from typing import Any

from simiankube.model.generate import generate
from simiankube.model.spec import parse_document
from simiankube.model.topology import Topology, expand
from simiankube.ui.server import serve
from simiankube.ui.view import Live, declared_edges

BUCKETS = ("0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "+Inf")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def metrics_texts(topology: Topology, tick: int, rng: random.Random) -> dict[str, str]:
    """One /metrics text per instance, counters growing with `tick` (about 10 req/s per edge)."""
    callers: dict[str, list[str]] = {}
    callees: dict[str, list[str]] = {}
    for source, target in declared_edges(topology):
        callers.setdefault(target, []).append(source)
        callees.setdefault(source, []).append(target)
    texts = {}
    for instance in topology.instances:
        service, package = instance.service.name, instance.service.package
        lines = []
        for caller in callers.get(service, ()):
            labels = f'caller="{caller}",package="{package}",service="{service}"'
            count = tick * 20 + rng.randrange(5)
            lines.append(f"simiankube_server_requests_total{{{labels}}} {count}.0")
            lines.append(f"simiankube_server_errors_total{{{labels}}} {tick // 10}.0")
            for n, le in enumerate(BUCKETS):
                lines.append(f'simiankube_server_latency_seconds_bucket{{{labels},le="{le}"}} '
                             f"{min(count, count * (n + 1) // 6)}.0")
        for callee in callees.get(service, ()):
            labels = f'package="{package}",peer="{callee}",service="{service}"'
            lines.append(f"simiankube_client_requests_total{{{labels}}} {tick * 20}.0")
            lines.append(f"simiankube_client_errors_total{{{labels}}} 0.0")
        texts[instance.name] = "\n".join(lines) + "\n"
    return texts


def timed(function: Any, repeat: int = 5) -> float:
    """Median milliseconds of `repeat` calls."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def server_side(live: Live, texts: list[dict[str, str]]) -> dict[str, float]:
    def scrape_round() -> None:
        now = time.monotonic()
        for name, text in texts[1].items():
            live.scraped(name, text, now)

    for name, text in texts[0].items():
        live.scraped(name, text, 0.0)
    scrape_ms = timed(scrape_round)
    frame_ms = timed(lambda: live.frame())
    json_ms = timed(lambda: json.dumps(live.frame(), separators=(",", ":")))
    return {
        "scrape_round_ms": round(scrape_ms, 1),
        "frame_ms": round(frame_ms, 1),
        "frame_and_json_ms": round(json_ms, 1),
        "frame_kib": round(len(json.dumps(live.frame(), separators=(",", ":"))) / 1024, 1),
        "graph_kib": round(len(json.dumps(live.graph(), separators=(",", ":"))) / 1024, 1),
    }


async def feed(live: Live, topology: Topology, stop: threading.Event) -> None:
    """New scrapes of every instance every second, as the runner's would be."""
    rng = random.Random(1)
    rounds = [metrics_texts(topology, tick, rng) for tick in range(2, 12)]  # made up front: not the view's cost
    tick = 0
    while not stop.is_set():
        now = time.monotonic()
        for name, text in rounds[tick % len(rounds)].items():
            live.scraped(name, text, now)
        tick += 1
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - now)))


def browser_side(url: str, seconds: float, services: int, screenshot: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        started = time.perf_counter()
        page.goto(url)
        page.wait_for_function(f"document.querySelectorAll('#services tbody tr').length === {services}",
                               timeout=120_000)
        first_paint_s = time.perf_counter() - started
        page.wait_for_function("window.simiankube.updateMs.length >= 2", timeout=60_000)
        page.evaluate("""() => { window.gaps = []; let last = performance.now();
            const tick = (t) => { window.gaps.push(t - last); last = t; requestAnimationFrame(tick); };
            requestAnimationFrame(tick); window.simiankube.updateMs.length = 0; }""")
        profiler = page.context.new_cdp_session(page)
        profiler.send("Profiler.enable")
        profiler.send("Profiler.start")
        time.sleep(seconds)
        profile = profiler.send("Profiler.stop")["profile"]
        if screenshot:
            page.screenshot(path=screenshot)
        updates = page.evaluate("window.simiankube.updateMs.slice()")
        gaps = sorted(page.evaluate("window.gaps.slice(1)"))
        browser.close()
    return {
        "page_ready_s": round(first_paint_s, 2),
        "frames_applied": len(updates),
        "frames_per_s": round(len(updates) / seconds, 2),
        "apply_frame_ms_median": round(statistics.median(updates), 1) if updates else None,
        "apply_frame_ms_max": round(max(updates), 1) if updates else None,
        "animation_frame_gap_ms_median": round(statistics.median(gaps), 1) if gaps else None,
        "animation_frame_gap_ms_p99": round(gaps[int(0.99 * (len(gaps) - 1))], 1) if gaps else None,
        "main_thread_busy_share": busy_share(profile),
    }


def busy_share(profile: dict[str, Any]) -> float:
    """Share of the sampled time the page's main thread was not idle (scripts, style, layout, paint)."""
    idle = {n["id"] for n in profile["nodes"] if n["callFrame"]["functionName"] == "(idle)"}
    deltas: list[int] = profile["timeDeltas"]
    spent_idle = sum(d for s, d in zip(profile["samples"], deltas) if s in idle)
    return round(1 - spent_idle / (sum(deltas) or 1), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15.0, help="how long the browser is watched")
    parser.add_argument("--no-browser", action="store_true", help="server side only")
    parser.add_argument("--screenshot", default="", metavar="PNG", help="save the page as it was at the end")
    args = parser.parse_args()

    topology = expand(parse_document(generate(args.services, seed=1)))
    edges = len(declared_edges(topology))
    print(f"architecture: {args.services} services, {len(topology.instances)} instances, {edges} edges, "
          f"{len(topology.regions)} regions")
    rng = random.Random(0)
    live = Live(topology, "benchmark")
    texts = [metrics_texts(topology, 1, rng), metrics_texts(topology, 2, rng)]
    print("server:", json.dumps(server_side(live, texts)))
    if args.no_browser:
        return

    stop = threading.Event()
    ready: dict[str, str] = {}

    async def serving() -> None:
        fresh = Live(topology, "benchmark")
        async with serve(fresh, "127.0.0.1", 0) as url:
            ready["url"] = url
            await feed(fresh, topology, stop)

    thread = threading.Thread(target=lambda: asyncio.run(serving()), daemon=True)
    thread.start()
    while "url" not in ready:
        time.sleep(0.05)
    try:
        print("browser:", json.dumps(browser_side(ready["url"], args.seconds, args.services, args.screenshot)))
    finally:
        stop.set()
        thread.join(5)


if __name__ == "__main__":
    main()
