"""`simiankube run`: whole architectures as real processes, the JSON report, no strays."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

from simiankube.testing.wait import wait_for

ARCHITECTURES = Path(__file__).resolve().parents[2] / "architectures" / "spigo"


def run(*args: str, timeout: float = 90) -> dict:  # type: ignore[type-arg]
    result = subprocess.run([sys.executable, "-m", "simiankube.cli", "run", *args, "-o", "json"],
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_lamp_runs_every_service_with_no_errors(tmp_path: Path) -> None:
    zipkin = tmp_path / "spans.jsonl"
    report = run(str(ARCHITECTURES / "lamp_arch.json"), "--duration", "3", "--zipkin-file", str(zipkin))

    services = report["services"]
    assert set(services) == {"rds-mysql", "memcache", "webserver", "webserver-elb", "www"}
    for name in ("rds-mysql", "memcache", "webserver", "webserver-elb"):
        assert services[name]["requests"] > 40, name  # memcache gets a third of the webserver's calls
        assert services[name]["errors"] == 0, name
        assert 0 < services[name]["p50_ms"] <= services[name]["p99_ms"]
    [traffic] = report["traffic"]
    assert traffic["requests"] >= 150 and traffic["errors"] == 0  # 10 ms ticks for 3 s
    assert report["chaos"] == []  # lamp names no victim
    assert report["instances"] == 23 and report["unscraped"] == []
    assert report["cpu_s"] > 0 and report["cpu_us_per_request"] > 0  # the workers' CPU while traffic ran
    assert report["cpu_wait_s"] >= 0
    wait_for(lambda: zipkin.exists() and zipkin.stat().st_size > 0, 5, message="spans written")
    assert report["zipkin_file"] == str(zipkin)
    matrix = report["expected_reachability"].splitlines()
    assert matrix[0].split() == ["-", "rds-mysql", "memcache", "webserver", "webserver-elb", "www",
                                 "kube-dns:53/UDP", "kube-dns:53/TCP"]
    assert matrix[3].split() == ["webserver", ".", ".", "X", "X", "X", ".", "."]


def test_text_report_shows_the_unenforced_expected_matrix() -> None:
    result = subprocess.run([sys.executable, "-m", "simiankube.cli", "run", str(ARCHITECTURES / "lamp_arch.json"),
                             "--duration", "1", "--zipkin-file", ""], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    assert "Local mode does NOT enforce policies" in result.stdout
    assert re.search(r"^www +X +X +X +\. +\.", result.stdout, re.MULTILINE)


def test_netflixoss_rides_out_the_monkey(tmp_path: Path) -> None:
    # A user request every 25 ms instead of 10: the timeout bound below then holds on a loaded 2-core machine.
    document = yaml.safe_load((ARCHITECTURES.parent / "netflixoss.yaml").read_text())
    document["spec"]["traffic"] = {"intervalMs": 25}
    architecture = tmp_path / "netflixoss.yaml"
    architecture.write_text(yaml.safe_dump(document))
    report = run(str(architecture), "--duration", "12", "--zipkin-file", "")  # time to see the recovery

    assert report["instances"] == 65
    services = report["services"]
    assert all(services[s]["requests"] > 0 for s in services if s != "www")
    kinds = [e["event"] for e in report["chaos"]]
    assert kinds == ["kill", "ready", "recovered"]
    kill, ready, recovered = report["chaos"]
    assert kill["instance"].startswith("netflixoss-homepage-") and kill["signal"] == "SIGKILL"
    assert ready["instance"] == kill["instance"] and ready["downtime_s"] < 8  # restarted 2 s after the kill
    [traffic] = report["traffic"]
    assert traffic["requests"] > 200
    # refused connections to the dead instance are retried elsewhere: what is left are timeouts of a busy machine
    assert traffic["errors"] - traffic["timeouts"] <= 0.01 * traffic["requests"]
    # ... and those stay few: a dead instance tried again and again (no ejection) would show up as timeouts
    assert traffic["timeouts"] <= 0.05 * traffic["requests"] and not report["saturated"]
    assert recovered["user_errors_since_kill"] <= 0.02 * traffic["requests"]  # through the kill and the restart
    assert report["calls_per_user_request"] >= 5  # elb → zuul → karyon → staash → tiers, replicas


@contextlib.contextmanager
def long_run(architecture: str) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """A `simiankube run` that would last two minutes, once its workers are up; never left behind."""
    process = subprocess.Popen(
        [sys.executable, "-m", "simiankube.cli", "run", str(ARCHITECTURES / architecture),
         "--duration", "120", "--zipkin-file", ""],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        yield process, _worker_pids(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_ctrl_c_stops_everything() -> None:
    with long_run("netflixoss_arch.json") as (process, pids):
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 130
        wait_for(lambda: not any(_alive(p) for p in pids), 5, interval=0.05, message="workers gone")


def test_workers_die_with_the_runner_even_on_sigkill() -> None:
    with long_run("lamp_arch.json") as (process, pids):
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        wait_for(lambda: not any(_alive(p) for p in pids), 10, interval=0.05, message="orphans gone")


def _worker_pids(process: subprocess.Popen[str]) -> list[int]:
    assert process.stderr is not None
    for line in process.stderr:
        if "instances ready" in line:
            pids = [int(p) for p in re.findall(r"=(\d+)", line)]
            assert pids and all(_alive(p) for p in pids)
            return pids
    raise AssertionError(f"run ended before it was ready (exit {process.wait()})")


def _alive(pid: int) -> bool:
    """Running and not a zombie (a zombie has already exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_bad_duration_is_a_usage_error() -> None:
    result = subprocess.run([sys.executable, "-m", "simiankube.cli", "run", str(ARCHITECTURES / "lamp_arch.json"),
                             "--duration", "soon"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "not a duration" in result.stderr

