"""The periodic segmentation verifier against a fake API and scripted probers (the real core)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from simiankube import contract
from simiankube.operator.kube import KubeError
from simiankube.operator.metrics import Metrics
from simiankube.operator.reconcile import Owner
from simiankube.operator.segmentation import POLL_SECONDS, SegmentationVerifier, Settle, judge
from simiankube.operator.tracking import StatusKeeper
from simiankube.segmentation.reachability import ContainerPort, Namespace, Pod
from simiankube.segmentation.verify import ProbeResult, ProbeTarget, VerificationReport, verify

from .conftest import FakeKube

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)
OWNER = Owner("demo", "shop", "arch-uid")
PODS = [Pod("demo", f"shop-{name}-0", {contract.LABEL_ARCHITECTURE: "shop", contract.LABEL_SERVICE: name},
            f"10.0.0.{i + 1}", (ContainerPort(contract.HTTP_PORT, "TCP", "http"),))
        for i, name in enumerate(("web", "db"))]
# db admits nobody: web → db must be blocked.
DENY_DB = {"metadata": {"name": "deny-db", "namespace": "demo"},
           "spec": {"podSelector": {"matchLabels": {contract.LABEL_SERVICE: "db"}}, "policyTypes": ["Ingress"]}}
READY = {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Progressing", "status": "False"}]}
ROLLING = {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Progressing", "status": "True"}]}


async def report(network: str) -> VerificationReport:
    """The real core over two pods: 'enforcing' blocks web→db, 'open' allows all, 'silent' never answers."""

    async def probe(source: Pod, targets: Sequence[ProbeTarget]) -> list[ProbeResult]:
        if network == "silent":
            raise ConnectionError("agent unreachable")
        blocked = network == "enforcing" and source.labels[contract.LABEL_SERVICE] == "web"
        return [ProbeResult(t.name, t.host, t.port, connected=not (blocked and t.name == "demo/shop-db-0"))
                for t in targets]

    return await verify(PODS, [Namespace("demo")], [DENY_DB], probe)


class VerifyingKube(FakeKube):
    """The fake API plus the live verification: scripted reports (or errors) stamped with the fake clock."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        super().__init__()
        self.clock = clock
        self.reports: list[VerificationReport | KubeError] = []
        self.verified: list[tuple[str, str]] = []

    async def verify_segmentation(self, namespace: str, architecture: str, settle: Settle,
                                  rendered: Any) -> VerificationReport:
        self.verified.append((namespace, architecture))
        await settle(1.0)
        outcome = self.reports.pop(0)
        if isinstance(outcome, KubeError):
            raise outcome
        return replace(outcome, time=self.clock().strftime("%Y-%m-%dT%H:%M:%SZ"))


class Rig:
    def __init__(self, status: dict[str, Any] | None = None, interval: float = 60) -> None:
        self.clock = NOW
        self.kube = VerifyingKube(lambda: self.clock)
        self.events: list[tuple[str, str, str]] = []
        self.metrics = Metrics()
        self.keeper = StatusKeeper(self.kube, 0)
        self.verifier = SegmentationVerifier(self.kube, self.keeper, self.metrics,
                                             lambda owner, t, r, m: self.events.append((t, r, m)),
                                             lambda: self.clock)
        self.body: dict[str, Any] = {
            "apiVersion": "simiankube.io/v1alpha1", "kind": "Architecture",
            "metadata": {"name": "shop", "namespace": "demo", "uid": OWNER.uid},
            "spec": {"segmentation": {"verifyIntervalSeconds": interval}, "services": [
                {"name": "web", "package": "monolith", "dependencies": []},
                {"name": "db", "package": "store", "dependencies": []}]},
            "status": dict(status if status is not None else READY)}
        self.kube.add(self.body)
        self.slept: list[float] = []

    def stop_after(self, sleeps: int) -> Any:
        async def sleep(seconds: float) -> bool:
            self.slept.append(seconds)
            self.clock += timedelta(seconds=seconds)
            return len(self.slept) >= sleeps

        return sleep

    def status(self) -> dict[str, Any]:
        return dict(self.kube.objects[("Architecture", "demo", "shop")].get("status") or {})

    def sample(self, name: str, **labels: str) -> float | None:
        value = self.metrics.registry.get_sample_value(name, {"namespace": "demo", "architecture": "shop", **labels})
        return value


@pytest.mark.parametrize(("network", "reason", "enforced", "counts"), [
    ("enforcing", ("Normal", "Verified"), True, (4, 0, 0)),
    ("open", ("Warning", "NotEnforced"), False, (3, 1, 0)),
    ("silent", ("Warning", "SegmentationMismatch"), None, (0, 4, 4)),
])
async def test_a_verification_is_recorded_in_status_events_and_metrics(
    network: str, reason: tuple[str, str], enforced: bool | None, counts: tuple[int, int, int]
) -> None:
    rig = Rig()
    rig.kube.reports.append(await report(network))
    await rig.verifier.verify_once(OWNER, _arch(rig), rig.body, rig.stop_after(99))
    segmentation = rig.status()["segmentation"]
    correct, incorrect, unobserved = counts
    expected = {"time": segmentation["time"], "correct": correct, "incorrect": incorrect, "unobserved": unobserved}
    # Unknown enforcement is no key at all: a merge patch cannot hold a null.
    assert segmentation == ({**expected, "enforced": enforced} if enforced is not None else expected)
    assert segmentation["time"].endswith("Z")
    assert rig.status()["conditions"] == READY["conditions"], "the rest of the status is kept"
    assert [(t, r) for t, r, _ in rig.events] == [reason]
    assert f"correct:{correct}, incorrect:{incorrect}" in rig.events[0][2]
    assert rig.kube.verified == [("demo", "shop")] and rig.slept == [1.0]  # the settle wait went through sleep
    result = {"Verified": "verified", "NotEnforced": "not_enforced", "SegmentationMismatch": "mismatch"}[reason[1]]
    assert rig.sample("simiankube_segmentation_verifications_total", result=result) == 1
    assert rig.sample("simiankube_segmentation_correct") == correct
    assert rig.sample("simiankube_segmentation_incorrect") == incorrect
    assert rig.sample("simiankube_segmentation_unobserved") == unobserved
    assert rig.sample("simiankube_segmentation_enforced") == (None if enforced is None else float(enforced))


async def test_the_loop_verifies_every_interval_and_announces_only_changes() -> None:
    rig = Rig(interval=12)
    rig.kube.reports += [await report("enforcing"), await report("enforcing"), await report("open")]
    await rig.verifier.run(rig.body, rig.stop_after(10))
    assert len(rig.kube.verified) == 3
    # Each verification waits 1 s to settle; between them the interval, slept in chunks of at most POLL_SECONDS.
    assert rig.slept == [1.0, 5.0, 5.0, 2.0] * 2 + [1.0, 5.0]
    assert [r for _, r, _ in rig.events] == ["Verified", "NotEnforced"], "an unchanged result posts no Event"
    assert [verb for verb, _, _ in rig.kube.writes] == ["patch"] * 3  # the time moves at each verification
    assert rig.status()["segmentation"]["enforced"] is False
    assert rig.sample("simiankube_segmentation_verifications_total", result="verified") == 2
    assert rig.sample("simiankube_segmentation_correct") is None, "gauges go when the verifier stops"


async def test_interval_zero_stops_without_a_write() -> None:
    rig = Rig(interval=0)
    await rig.verifier.run(rig.body, rig.stop_after(5))
    assert rig.kube.verified == [] and rig.kube.writes == [] and rig.events == [] and rig.slept == []


async def test_nothing_is_verified_while_rolling_out() -> None:
    rig = Rig(status=ROLLING)
    await rig.verifier.run(rig.body, rig.stop_after(4))
    assert rig.kube.verified == [] and rig.kube.writes == []
    assert rig.slept == [POLL_SECONDS] * 4


async def test_a_restart_waits_for_the_rest_of_the_interval() -> None:
    last = (NOW - timedelta(seconds=50)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rig = Rig(status={**READY, "segmentation": {"time": last, "correct": 4, "incorrect": 0, "enforced": True,
                                               "unobserved": 0}})
    rig.kube.reports.append(await report("enforcing"))
    await rig.verifier.run(rig.body, rig.stop_after(4))
    assert rig.slept[:2] == [POLL_SECONDS, POLL_SECONDS] and len(rig.kube.verified) == 1  # 10 s left of 60
    assert rig.events == [], "the same result as before the restart"


async def test_an_api_error_is_counted_and_writes_nothing() -> None:
    rig = Rig()
    rig.kube.reports.append(KubeError(403, "pods is forbidden"))
    assert await rig.verifier.verify_once(OWNER, _arch(rig), rig.body, rig.stop_after(99))
    assert rig.kube.writes == [] and rig.events == []
    assert rig.sample("simiankube_segmentation_verifications_total", result="error") == 1


async def test_no_running_pods_records_nothing() -> None:
    rig = Rig()

    async def never(source: Pod, targets: Sequence[ProbeTarget]) -> list[ProbeResult]:
        raise AssertionError("no pod, no probe")

    rig.kube.reports.append(await verify([], [Namespace("demo")], [DENY_DB], never))
    assert await rig.verifier.verify_once(OWNER, _arch(rig), rig.body, rig.stop_after(99))
    assert rig.kube.writes == [] and rig.events == []


async def test_judge_ranks_not_enforced_above_a_mismatch() -> None:
    assert judge(await report("open")).reason == "NotEnforced"
    assert "4 not observed" in judge(await report("silent")).message


def _arch(rig: Rig) -> Any:
    from simiankube.operator.reconcile import parse_body

    return parse_body(rig.body)
