"""Call splits of a whole `simiankube run` against what spigo's routing gives: one dependency instance per
request, uniform over the instances of all dependencies (own zone first for zuul and karyon)."""

from __future__ import annotations

from pathlib import Path

from tests.run.test_run import run

EXAMPLES = Path(__file__).resolve().parents[2] / "architectures"


def share(report: dict, first: str, second: str) -> float:  # type: ignore[type-arg]
    a, b = (report["services"][s]["requests"] for s in (first, second))
    assert a + b > 300, (a, b)
    return a / (a + b)  # type: ignore[no-any-return]


def test_lamp_webserver_splits_memcache_and_mysql_by_instances() -> None:
    """memcache has 1 instance, rds-mysql 2: spigo sends a third of the webserver's calls to memcache
    (before: every request called both, 1:1)."""
    report = run(str(EXAMPLES / "lamp.yaml"), "--duration", "5", "--no-chaos", "--zipkin-file", "")
    web, data = report["services"]["webserver"]["requests"], calls(report, "memcache", "rds-mysql")
    assert abs(data - web) <= 0.02 * web  # one call per request (a few are in flight when the run stops)
    assert abs(share(report, "memcache", "rds-mysql") - 1 / 3) < 0.06


def test_netflixoss_wwwproxy_splits_login_and_homepage_by_instances() -> None:
    """wwwproxy (zuul, 2 per zone) sees 6 login and 8 homepage instances in its zone: 18:24 (before ~1:1)."""
    report = run(str(EXAMPLES / "netflixoss.yaml"), "--duration", "6", "--no-chaos", "--zipkin-file", "")
    assert abs(share(report, "login", "homepage") - 18 / 42) < 0.05


def calls(report: dict, *services: str) -> int:  # type: ignore[type-arg]
    return sum(report["services"][s]["requests"] for s in services)  # type: ignore[no-any-return]
