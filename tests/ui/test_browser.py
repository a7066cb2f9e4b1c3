"""The live view in a real browser, during a real `simiankube run` with chaos.

One run of netflixoss (65 instances, the monkey kills a homepage instance at half time) serves
the view; headless Chromium loads it and the test reads what a user sees: the graph, the tables
beside it, the timeline. Screenshots of each level go to the test's tmp dir (path printed).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from simiankube.model.spec import load_file
from simiankube.testing.wait import wait_for

ARCHITECTURE = Path(__file__).resolve().parents[2] / "architectures" / "netflixoss.yaml"
DURATION = 50  # seconds of traffic; the kill comes at half time, after the drill-down checks
CHAOS_VISIBLE_WITHIN = 5.0  # seconds from the runner's kill to the page showing it


@dataclass
class Run:
    """A `simiankube run --ui` in the background, its stderr lines with the time each arrived."""

    process: subprocess.Popen[str]
    lines: list[tuple[float, str]] = field(default_factory=list)

    def read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def find(self, pattern: str) -> tuple[float, re.Match[str]] | None:
        for at, line in list(self.lines):
            if match := re.search(pattern, line):
                return at, match
        if self.process.poll() is not None:
            raise AssertionError(f"run ended (exit {self.process.returncode}):\n" + "\n".join(l for _, l in self.lines))
        return None


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    process = subprocess.Popen(
        [sys.executable, "-m", "simiankube.cli", "run", str(ARCHITECTURE), "--duration", str(DURATION),
         "--zipkin-file", "", "--ui", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    started = Run(process)
    threading.Thread(target=started.read, daemon=True).start()
    try:
        yield started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("screenshots")
    print(f"\nscreenshots of the live view: {folder}")
    return folder


def table(page: Any, selector: str, key: str) -> dict[str, dict[str, str]]:
    """Rows of a table by their data key: {row: {field: data-value}}."""
    return page.eval_on_selector_all(  # type: ignore[no-any-return]
        f"{selector} tbody tr",
        f"""rows => Object.fromEntries(rows.map(r => [r.dataset.{key}, Object.fromEntries(
              [...r.querySelectorAll('[data-field]')].map(c => [c.dataset.field, c.dataset.value ?? c.textContent]))]))""",
    )


def test_the_view_follows_a_run_with_chaos(browser: Any, run: Run, shots: Path) -> None:
    arch = load_file(ARCHITECTURE)
    services = [s.name for s in arch.services]
    declared = {f"{s.name}→{d}" for s in arch.services for d in s.dependencies if arch.has_service(d)}
    _, url = wait_for(lambda: run.find(r"live view: (http://\S+)"), 60, message="the view's URL")
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url.group(1))

    # Every service, in the graph and in the table.
    wait_for(lambda: len(table(page, "#services", "service")) == len(services), 20, message="the services table")
    assert list(table(page, "#services", "service")) == services
    nodes = page.evaluate("window.simiankube.cy.nodes().map(n => n.data('service'))")
    assert sorted(nodes) == sorted(services)
    assert set(table(page, "#edges", "edge")) == declared

    # Traffic: every declared edge's rate rises above zero; no undeclared pair carries any.
    wait_for(lambda: run.find("instances ready"), 120, message="every instance ready")

    # One dependency instance per request (spigo's routing): a thin edge can show 0/s in one frame and
    # traffic in the next, so each edge must show traffic in some frame of the window.
    busy: set[str] = set()

    def busy_edges() -> bool:
        busy.update(edge for edge, row in table(page, "#edges", "edge").items() if float(row["rps"] or 0) > 0)
        return busy == declared

    wait_for(busy_edges, 60, message="traffic on every declared edge")
    undeclared = page.evaluate("window.simiankube.state.frame.all.edges.filter(e => !e.declared && e.rps > 0)")
    assert undeclared == []
    assert not page.query_selector_all("#edges td.undeclared")
    assert float(table(page, "#services", "service")["homepage"]["rps"]) > 0
    page.screenshot(path=shots / "1-global.png")

    # Drill-down: a region, then a service with its instances by zone.
    page.click("#breadcrumb button:text-is('us-east-1')")
    wait_for(lambda: page.evaluate("location.hash") == "#/region/us-east-1", 5, message="the region level")
    in_region = [s.name for s in arch.services if s.regions > 0]
    wait_for(lambda: list(table(page, "#services", "service")) == in_region, 5, message="the region's services")
    page.screenshot(path=shots / "2-region.png")
    page.click("#services a:text-is('homepage')")
    wait_for(lambda: page.evaluate("location.hash") == "#/service/homepage", 5, message="the service level")
    instances = wait_for(lambda: page.eval_on_selector_all("#zones li", "l => l.map(i => i.dataset.instance)"), 5,
                         message="the instances by zone")
    assert len(instances) == 24 and all(i.startswith("netflixoss-homepage-") for i in instances)
    assert len(page.query_selector_all("#zones .zone")) == 3
    page.screenshot(path=shots / "3-service.png")

    # Chaos: the kill shows on the victim within a few seconds.
    killed_at, kill = wait_for(lambda: run.find(r"chaos: kill (\S+)"), DURATION, message="the monkey's kill")
    victim = kill.group(1)
    assert victim in instances
    wait_for(lambda: page.query_selector(f"#zones li[data-instance='{victim}'][data-ready='false']"),
             CHAOS_VISIBLE_WITHIN, interval=0.1, message=f"{victim} shown down")
    assert page.query_selector(f"#timeline li[data-event='kill'][data-instance='{victim}']")
    assert time.monotonic() - killed_at < CHAOS_VISIBLE_WITHIN + 1
    page.screenshot(path=shots / "4-kill.png")
    page.click("#breadcrumb button:text-is('all regions')")
    wait_for(lambda: page.query_selector("#services tr.down[data-service='homepage']")
             or page.query_selector("#timeline li[data-event='ready']"), 5, message="homepage marked down")
    page.screenshot(path=shots / "5-global-kill.png")

    # ...and the recovery follows on the timeline.
    wait_for(lambda: page.query_selector(f"#timeline li[data-event='ready'][data-instance='{victim}']"), 30,
             message="the victim's recovery")
    assert errors == []
    page.close()
