"""`simiankube policy explain` and `simiankube verify` on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simiankube.cli import main
from simiankube.cli.segmentation import EXIT_CLUSTER

ROOT = Path(__file__).resolve().parents[2]
LAMP = str(ROOT / "architectures" / "spigo" / "lamp_arch.json")


def test_explain_prints_the_service_truth_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", LAMP]) == 0
    out = capsys.readouterr().out
    assert "8 NetworkPolicies" in out
    table = out[out.index("\n-") + 1:]
    assert table.splitlines()[:3] == [
        "-             rds-mysql memcache webserver webserver-elb www kube-dns:53/UDP kube-dns:53/TCP",
        "rds-mysql     X         X        X         X             X   .               .",
        "memcache      X         .        X         X             X   .               .",
    ]


def test_explain_json_lists_services_and_allowed_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", LAMP, "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["services"] == ["rds-mysql", "memcache", "webserver", "webserver-elb", "www"]
    allowed = {tuple(pair) for pair in data["allowed"]}
    assert {("webserver", "rds-mysql"), ("www", "webserver-elb"), ("clients", "www")} <= allowed
    assert ("www", "webserver") not in allowed
    assert ("clients", "webserver") not in allowed


def test_explain_by_pod_with_scale(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", LAMP, "--pods", "--scale", "50", "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "lamp-webserver-us-east-1-8" in data["sources"]
    assert "lamp-webserver-us-east-1-9" not in data["sources"]  # 18 at 50% = 9 instances
    assert "lamp-rds-mysql-us-east-1-1" not in data["sources"]  # 2 at 50% = 1
    assert ["lamp-webserver-us-east-1-3", "lamp-rds-mysql-us-east-1-0"] in data["allowed"]
    assert ["lamp-webserver-us-east-1-3", "lamp-webserver-us-east-1-4"] not in data["allowed"]
    assert ["lamp-webserver-us-east-1-3", "lamp-webserver-us-east-1-3"] in data["allowed"]  # loopback


def test_verify_without_a_cluster_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "none",
        "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
        "users": [{"name": "none", "user": {"token": "x"}}],
    }))
    assert main(["verify", LAMP, "--kubeconfig", str(kubeconfig), "--settle", "0"]) == EXIT_CLUSTER
    assert "cannot verify lamp in namespace default" in capsys.readouterr().err
