"""The verification core with scripted probers, and the Kubernetes wire against a fake API server."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client

from simiankube import contract
from simiankube.segmentation.kube import (
    PodProxyProber, judged_policies, newest_creation, pod_from_api, probeable, settle_remaining)
from simiankube.segmentation.reachability import ContainerPort, Namespace, Pod
from simiankube.segmentation.verify import ProbeResult, ProbeTarget, enforcement, verify

PODS = [Pod("ns", name, {"app": name}, f"10.0.0.{i + 1}", (ContainerPort(8080, "TCP", "http"),))
        for i, name in enumerate(("a", "b"))]
DENY_B = {"metadata": {"name": "deny-b", "namespace": "ns"},
          "spec": {"podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Ingress"]}}


class Scripted:
    """A prober whose network allows `open` pairs; `failures` requests fail first per source; a `slow` pair is
    seen closed by its first that many looks (a busy node, a restarting container)."""

    def __init__(self, open_pairs: set[tuple[str, str]], failures: dict[str, int] | None = None,
                 slow: dict[tuple[str, str], int] | None = None) -> None:
        self.open = open_pairs
        self.failures = dict(failures or {})
        self.slow = dict(slow or {})
        self.calls: list[str] = []
        self.looks: list[tuple[str, str]] = []

    async def __call__(self, source: Pod, targets: Sequence[ProbeTarget]) -> list[ProbeResult]:
        self.calls.append(source.name)
        if self.failures.get(source.name, 0) > 0:
            self.failures[source.name] -= 1
            raise ConnectionError("agent unreachable")
        results = []
        for t in targets:
            pair = (source.key, t.name)
            self.looks.append(pair)
            late = self.slow.get(pair, 0) > 0
            if late:
                self.slow[pair] -= 1
            results.append(ProbeResult(t.name, t.host, t.port,
                                       connected=not late and (pair in self.open or source.key == t.name)))
        return results


NO_PAUSE = (0.0, 0.0)  # recheck rounds without waiting


async def test_one_request_per_source_and_a_blocked_path_observed() -> None:
    prober = Scripted({("ns/b", "ns/a")})
    report = await verify(PODS, [Namespace("ns")], [DENY_B], prober, by_pod=True)
    assert sorted(prober.calls) == ["a", "b"]
    assert report.observed.text() == report.expected.text() == "- a b\na . X\nb . .\n"
    assert (report.correct, report.incorrect, report.enforced) == (4, 0, True)


async def test_a_failed_probe_request_is_retried_once() -> None:
    prober = Scripted({("ns/b", "ns/a")}, failures={"a": 1})
    report = await verify(PODS, [Namespace("ns")], [DENY_B], prober, by_pod=True)
    assert prober.calls.count("a") == 2
    assert report.incorrect == 0


async def test_a_source_that_fails_every_try_is_not_observed_and_counts_as_incorrect() -> None:
    prober = Scripted({("ns/b", "ns/a")}, failures={"a": 6})
    report = await verify(PODS, [Namespace("ns")], [DENY_B], prober, by_pod=True, recheck_pauses=NO_PAUSE)
    assert prober.calls.count("a") == 6  # twice in the first look and in each of the two rechecks
    assert report.observed.text() == "- a b\na ? ?\nb . .\n"
    assert (report.correct, report.incorrect, report.unknown) == (2, 2, 2)
    assert "reachability: correct:2, incorrect:2" in report.text()


async def test_a_source_that_answers_a_recheck_is_observed() -> None:
    prober = Scripted({("ns/b", "ns/a")}, failures={"a": 2})
    report = await verify(PODS, [Namespace("ns")], [DENY_B], prober, by_pod=True, recheck_pauses=NO_PAUSE)
    assert prober.calls.count("a") == 3
    assert (report.correct, report.incorrect, report.unknown) == (4, 0, 0)


async def test_an_allowed_path_seen_closed_once_is_probed_again_after_a_pause() -> None:
    prober = Scripted({("ns/b", "ns/a")}, slow={("ns/b", "ns/a"): 1})
    report = await verify(PODS, [Namespace("ns")], [DENY_B], prober, by_pod=True, recheck_pauses=(0.2, 0.2))
    assert prober.looks.count(("ns/b", "ns/a")) == 2
    assert prober.looks.count(("ns/a", "ns/b")) == 1, "a path seen as expected is not probed again"
    assert (report.correct, report.incorrect) == (4, 0)


async def test_an_allowed_path_blocked_every_time_stays_incorrect() -> None:
    prober = Scripted(set())  # b -> a is allowed, but the network blocks it
    report = await verify(PODS, [Namespace("ns")], [DENY_B], prober, by_pod=True, recheck_pauses=NO_PAUSE)
    assert prober.looks.count(("ns/b", "ns/a")) == 3
    assert report.observed.text() == "- a b\na . X\nb X .\n"
    assert report.incorrect == 1


async def test_a_forbidden_path_seen_open_is_not_probed_again() -> None:
    prober = Scripted({("ns/a", "ns/b"), ("ns/b", "ns/a")})
    report = await verify(PODS, [Namespace("ns")], [DENY_B], prober, by_pod=True)
    assert sorted(prober.calls) == ["a", "b"]
    assert report.incorrect == 1


async def test_an_open_network_under_a_deny_policy_is_not_enforced() -> None:
    report = await verify(PODS, [Namespace("ns")], [DENY_B], Scripted({("ns/a", "ns/b"), ("ns/b", "ns/a")}))
    assert report.enforced is False
    assert report.status().to_status()["enforced"] is False


def test_enforcement_needs_an_observed_expected_block() -> None:
    assert enforcement([(True, True)]) is None
    assert enforcement([(False, None)]) is None
    assert enforcement([(False, True), (False, True)]) is False
    assert enforcement([(False, True), (False, False)]) is True


def test_settle_waits_for_the_newest_policy() -> None:
    created = {"metadata": {"creationTimestamp": "2026-01-01T10:00:00Z"}}
    newer = {"metadata": {"creationTimestamp": "2026-01-01T10:00:03Z"}}
    newest = newest_creation([created, newer])
    now = dt.datetime(2026, 1, 1, 10, 0, 4, tzinfo=dt.timezone.utc)
    assert settle_remaining(newest, now, 5.0) == 4.0
    assert settle_remaining(newest, now + dt.timedelta(seconds=10), 5.0) == 0.0
    assert settle_remaining(None, now, 5.0) == 0.0


def test_pods_from_the_api() -> None:
    raw: dict[str, Any] = {
        "metadata": {"name": "p", "namespace": "ns", "labels": {"x": "1"}},
        "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": "10.1.2.3"},
    }
    assert pod_from_api(raw) == Pod("ns", "p", {"x": "1"}, "10.1.2.3", (ContainerPort(8080, "TCP", "http"),))
    assert probeable(raw)
    assert not probeable({**raw, "status": {"phase": "Pending"}})
    assert not probeable({**raw, "metadata": {**raw["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}})


async def test_pod_proxy_prober_posts_to_the_pods_proxy_subresource(aiohttp_server: Any) -> None:
    seen: list[tuple[str, Any]] = []

    async def proxy(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((request.raw_path, body))
        return web.json_response({"results": [
            {"name": t["name"], "host": t["host"], "port": t["port"], "connected": t["host"] == "10.0.0.2",
             "http_status": 200 if t["host"] == "10.0.0.2" else None, "error": None, "elapsed_ms": 1.5}
            for t in body["targets"]]})

    app = web.Application()
    app.router.add_post("/api/v1/namespaces/{namespace}/pods/{name}/proxy/probe", proxy)
    server = await aiohttp_server(app)
    configuration = client.Configuration(host=str(server.make_url("")).rstrip("/"))
    async with client.ApiClient(configuration) as api:
        results = await PodProxyProber(api, timeout_ms=700)(
            PODS[0], [ProbeTarget("ns/a", "10.0.0.1", 8080), ProbeTarget("ns/b", "10.0.0.2", 8080)])
    assert seen[0][0] == "/api/v1/namespaces/ns/pods/a:8080/proxy/probe"
    assert seen[0][1]["timeout_ms"] == 700
    assert [(r.name, r.connected, r.http_status) for r in results] == [("ns/a", False, None), ("ns/b", True, 200)]


async def test_a_deleted_policy_is_judged_against_the_render_and_reported() -> None:
    """Deleted by hand: expected still blocks, the open path is a mismatch, and the policy is named."""
    ours = {**DENY_B, "metadata": {**DENY_B["metadata"], "labels": {contract.LABEL_ARCHITECTURE: "shop"}}}
    theirs = {"metadata": {"name": "team-policy", "namespace": "ns", "labels": {}},
              "spec": {"podSelector": {"matchLabels": {"app": "nobody"}}, "policyTypes": ["Ingress"]}}
    policies, missing = judged_policies([theirs], [ours], "shop")
    assert missing == ("deny-b",) and policies == [theirs, ours]
    assert judged_policies([theirs, ours], [ours], "shop") == ([theirs, ours], ())
    assert judged_policies([theirs], None, "shop") == ([theirs], ())
    open_network = Scripted({("ns/a", "ns/b"), ("ns/b", "ns/a")})
    report = replace(await verify(PODS, [Namespace("ns")], policies, open_network, by_pod=True),
                     missing_policies=missing, judged_against="rendered")
    assert report.expected.text() == "- a b\na . X\nb . .\n"
    assert not report.ok and report.incorrect == 1
    assert "MISSING NetworkPolicies the architecture renders: deny-b" in report.text()
    data = report.to_dict()
    assert data["missingPolicies"] == ["deny-b"] and data["judgedAgainst"] == "rendered" and data["ok"] is False
    assert data["expected"] == {"rows": ["a", "b"], "columns": ["a", "b"], "cells": [[".", "X"], [".", "."]]}
    assert data["counts"] == {"correct": 3, "incorrect": 1, "unobserved": 0}
