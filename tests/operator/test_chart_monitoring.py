"""The chart's monitoring options: PodMonitor, ServiceMonitor and the Grafana dashboard, off by default."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.operator.test_chart import CHART, by_kind, helm, template

ALL_ON = ("monitoring.podMonitor.enabled=true", "monitoring.serviceMonitor.enabled=true",
          "monitoring.grafanaDashboard.enabled=true")


def test_nothing_for_prometheus_by_default(helm_bin: Path) -> None:
    docs = template(helm_bin)
    assert not by_kind(docs, "PodMonitor") and not by_kind(docs, "ServiceMonitor")
    assert not [d for d in by_kind(docs, "ConfigMap") if "grafana_dashboard" in d["metadata"].get("labels", {})]


def test_monitors_select_the_nanoservices_and_the_operator(helm_bin: Path) -> None:
    docs = template(helm_bin, *ALL_ON, "monitoring.podMonitor.labels.release=kps")
    (pods,) = by_kind(docs, "PodMonitor")
    assert pods["metadata"]["labels"]["release"] == "kps"
    assert pods["spec"]["namespaceSelector"] == {"any": True}
    assert pods["spec"]["selector"]["matchExpressions"] == [{"key": "simiankube.io/architecture", "operator": "Exists"}]
    (endpoint,) = pods["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["honorLabels"]) == ("http", "/metrics", True)
    assert "architecture" in {r["targetLabel"] for r in endpoint["relabelings"]}

    (operator,) = by_kind(docs, "ServiceMonitor")
    (service,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-metrics")]
    assert operator["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert operator["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"


def test_pod_monitor_can_be_limited_to_namespaces(helm_bin: Path) -> None:
    (pods,) = by_kind(template(helm_bin, *ALL_ON, "monitoring.podMonitor.namespaces={demo,lab}"), "PodMonitor")
    assert pods["spec"]["namespaceSelector"] == {"matchNames": ["demo", "lab"]}


def test_service_monitor_needs_the_metrics_service(helm_bin: Path) -> None:
    result = subprocess.run([str(helm_bin), "template", "sk", str(CHART), "--set",
                             "monitoring.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "needs metrics.service.enabled" in result.stderr


def test_dashboard_configmap_for_the_grafana_sidecar(helm_bin: Path) -> None:
    docs = template(helm_bin, *ALL_ON, "monitoring.grafanaDashboard.namespace=monitoring")
    (dashboard,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "monitoring"
    content = json.loads(dashboard["data"]["simiankube.json"])
    assert content == json.loads((CHART / "dashboards" / "simiankube.json").read_text())
    expressions = [t["expr"] for p in content["panels"] for t in p.get("targets", ())]
    # The view's figures: per service and per edge rates, errors and latency, plus chaos from the operator.
    for series in ("simiankube_server_requests_total", "simiankube_server_errors_total",
                   "simiankube_server_latency_seconds_bucket", "simiankube_client_requests_total",
                   "simiankube_client_errors_total", "simiankube_chaos_pods_deleted_total"):
        assert any(series in e for e in expressions), series
    assert any(re.search(r"by \(caller, service, le\)", e) for e in expressions)  # the callee's latency per edge


def test_lint_with_monitoring_on(helm_bin: Path) -> None:
    helm(helm_bin, "lint", "--strict", str(CHART), *[a for v in ALL_ON for a in ("--set", v)])
