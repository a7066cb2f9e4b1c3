"""`simiankube ui` against a real API server: the graph from the Architecture, readiness from its pods,
pod deletions on the timeline. (kwok's pods run no nanoservice, so their /metrics cannot be read:
the figures stay at zero, which is what the view must show for pods it cannot scrape.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

from simiankube.testing.controlplane import ControlPlane
from simiankube.testing.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "ui-view"


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_ui_follows_an_architecture_on_the_cluster(control_plane: ControlPlane) -> None:
    rig = control_plane
    rig.kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "architecture.yaml"))
    rig.kubectl("wait", "--for=condition=Established", "crd/architectures.simiankube.io", "--timeout=30s")
    rig.kubectl("create", "namespace", NAMESPACE)
    rig.kubectl("apply", "-n", NAMESPACE, "-f", str(ROOT / "architectures" / "lamp.yaml"))
    rendered = subprocess.run([sys.executable, "-m", "simiankube.cli", "render", str(ROOT / "architectures" / "lamp.yaml"),
                               "-n", NAMESPACE], capture_output=True, text=True, check=True).stdout
    rig.kubectl("apply", "--server-side", "-f", "-", input=rendered)

    process = subprocess.Popen(
        [sys.executable, "-m", "simiankube.cli", "ui", "lamp", "-n", NAMESPACE, "--kubeconfig", str(rig.kubeconfig),
         "--listen", "127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    assert process.stderr is not None
    threading.Thread(target=lambda: lines.extend(process.stderr or ()), daemon=True).start()
    try:
        url = wait_for(lambda: next((m.group(1) for l in lines if (m := re.search(r"(http://\S+)", l))), None), 60,
                       message="the view's URL").rstrip("/")
        graph = get(f"{url}/api/graph")
        assert graph["source"] == f"namespace {NAMESPACE}"
        assert [s["name"] for s in graph["services"]] == ["rds-mysql", "memcache", "webserver", "webserver-elb", "www"]
        assert len(graph["instances"]) == 23

        def ready() -> dict[str, Any]:
            return {name: f["ready"] for name, f in get(f"{url}/api/frame")["all"]["services"].items()}

        wait_for(lambda: ready() == {"rds-mysql": 2, "memcache": 1, "webserver": 18, "webserver-elb": 1, "www": 1},
                 90, interval=1, message="every pod ready in the view")
        frame = get(f"{url}/api/frame")
        assert all(e["rps"] == 0 for e in frame["all"]["edges"])  # nothing scraped, nothing invented

        victim = rig.kubectl("get", "pods", "-n", NAMESPACE, "-l", "simiankube.io/service=webserver",
                             "-o", "jsonpath={.items[0].metadata.name}").stdout
        rig.kubectl("delete", "pod", "-n", NAMESPACE, victim, "--wait=false")
        deleted = wait_for(lambda: [e for e in get(f"{url}/api/frame")["events"]
                                    if e["event"] == "pod deleted" and e["pod"] == victim], 30, interval=0.5,
                           message=f"{victim} deleted in the view")
        replica = deleted[0]["instance"]
        assert replica.startswith("lamp-webserver-us-east-1-")
        wait_for(lambda: [e for e in get(f"{url}/api/frame")["events"]
                          if e["event"] == "pod created" and e["instance"] == replica], 60, interval=0.5,
                 message="its successor in the view")
        wait_for(lambda: ready()["webserver"] == 18, 60, interval=1, message="webserver ready again")

        # The operator's chaos controller names its kills in status.chaos.lastKill: the view says "kill".
        monkeyed = rig.kubectl("get", "pods", "-n", NAMESPACE, "-l", "simiankube.io/service=rds-mysql",
                               "-o", "jsonpath={.items[0].metadata.name}").stdout
        status = {"status": {"chaos": {"kills": 1, "lastKill": {"pod": monkeyed, "service": "rds-mysql",
                                                                 "time": "2026-11-29T05:00:00Z"}}}}
        rig.kubectl("patch", "architecture", "lamp", "-n", NAMESPACE, "--subresource=status", "--type=merge",
                    "-p", json.dumps(status))
        rig.kubectl("delete", "pod", "-n", NAMESPACE, monkeyed, "--wait=false")
        kills = wait_for(lambda: [e for e in get(f"{url}/api/frame")["events"] if e["event"] == "kill"], 30,
                         interval=0.5, message="the chaos kill in the view")
        assert kills[0]["pod"] == monkeyed and kills[0]["instance"] == monkeyed and kills[0]["by"] == "chaos"
        assert not [e for e in get(f"{url}/api/frame")["events"] if e["event"] == "pod deleted" and e["pod"] == monkeyed]
    finally:
        process.terminate()
        process.wait(10)
        rig.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_ui_names_a_missing_architecture(control_plane: ControlPlane) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simiankube.cli", "ui", "nothing-here", "-n", "default",
         "--kubeconfig", str(control_plane.kubeconfig), "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 5
    assert "cannot show nothing-here in namespace default" in result.stderr
