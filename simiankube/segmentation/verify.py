"""Live proof of segmentation: expected (from the policies present) vs observed (probes).

The core, `verify`, needs no cluster: it takes pods, namespaces, NetworkPolicies
and a `probe(source, targets)` coroutine. The expectation comes from the
reachability model applied to the policies given (those really present, not
the spec); observations come from asking each source pod's nanoservice to
probe every destination in ONE request (retried once when it fails); what
looks wrong in a way a busy node can cause is probed again (`recheck`). The
Kubernetes prober (pod proxy) lives in `netpol_kube`; the tests plug in one
that posts to local nanoservice processes.

When policies say something must be blocked and nothing is, the network
plugin does not enforce NetworkPolicy: that is reported as such
(`enforced=False`), not as a defect of the policies.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from simiankube import contract
from simiankube.segmentation.reachability import (
    ALLOWED,
    BLOCKED,
    LEGEND,
    UNKNOWN,
    Matrix,
    Model,
    Namespace,
    Pod,
    matrix_from_observations,
)

NOT_ENFORCED_HELP = (
    "the cluster's network plugin does not enforce NetworkPolicy: every path the policies block is open.\n"
    "Use a plugin that enforces them: kind >= v0.24 (its default kindnetd enforces; not on WSL2), "
    "or minikube start --cni=calico (or cilium)."
)


@dataclass(frozen=True)
class ProbeTarget:
    name: str
    host: str
    port: int


@dataclass(frozen=True)
class ProbeResult:
    """One result of the nanoservice's `POST /probe` (its JSON contract, field for field)."""

    name: str
    host: str
    port: int
    connected: bool
    http_status: int | None = None
    error: str = ""
    elapsed_ms: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeResult:
        return cls(
            name=data["name"],
            host=data["host"],
            port=int(data["port"]),
            connected=bool(data["connected"]),
            http_status=data.get("http_status"),
            error=data.get("error") or "",
            elapsed_ms=float(data.get("elapsed_ms") or 0.0),
        )


def probe_request(targets: Sequence[ProbeTarget], timeout_ms: int) -> dict[str, Any]:
    """The body of `POST /probe`."""
    return {"targets": [{"name": t.name, "host": t.host, "port": t.port} for t in targets], "timeout_ms": timeout_ms}


def parse_probe_response(body: Mapping[str, Any]) -> list[ProbeResult]:
    return [ProbeResult.from_dict(item) for item in body["results"]]


Prober = Callable[[Pod, Sequence[ProbeTarget]], Awaitable[Sequence[ProbeResult]]]


Pair = tuple[str, str]  # (source key, destination key)
# A path the policies allow but a probe saw closed, or a source that could not be asked, is probed again after each
# pause: a container restarting, or a node too busy to connect within the timeout, looks blocked once; a policy that
# blocks looks blocked every time. A path seen open needs no second look: an open connection is proof.
RECHECK_PAUSES = (1.0, 3.0)


async def observe(
    plan: Sequence[tuple[Pod, Sequence[Pod]]],
    probe: Prober,
    port: int = contract.HTTP_PORT,
    concurrency: int = 16,
) -> dict[Pair, bool | None]:
    """For each (source, destinations): (source key, destination key) -> connected; None when the source could not
    be asked."""
    gate = asyncio.Semaphore(concurrency)

    async def ask(source: Pod, destinations: Sequence[Pod]) -> dict[str, bool]:
        targets = [ProbeTarget(name=d.key, host=d.ip, port=port) for d in destinations]
        async with gate:
            for attempt in (1, 2):  # a failed probe request is retried once
                try:
                    results = await probe(source, targets)
                    return {r.name: r.connected for r in results}
                except Exception:  # noqa: BLE001 - any failure of the agent is "not observed"
                    if attempt == 2:
                        return {}
        return {}

    answers = await asyncio.gather(*(ask(source, destinations) for source, destinations in plan))
    return {
        (source.key, d.key): answer.get(d.key)
        for (source, destinations), answer in zip(plan, answers)
        for d in destinations
    }


def doubtful(observed: Mapping[Pair, bool | None], expected: Mapping[Pair, bool]) -> list[Pair]:
    """Observations worth a second look: not observed, or an allowed path seen closed."""
    return [pair for pair, seen in observed.items() if seen is None or (seen is False and expected[pair])]


async def recheck(
    observed: dict[Pair, bool | None],
    expected: Mapping[Pair, bool],
    pods: Sequence[Pod],
    probe: Prober,
    port: int = contract.HTTP_PORT,
    pauses: Sequence[float] = RECHECK_PAUSES,
) -> None:
    """Probe the doubtful pairs again, once after each pause, keeping what each new look sees."""
    by_key = {pod.key: pod for pod in pods}
    for pause in pauses:
        pending = doubtful(observed, expected)
        if not pending:
            return
        await asyncio.sleep(pause)
        destinations: dict[str, list[Pod]] = {}
        for source, destination in pending:
            destinations.setdefault(source, []).append(by_key[destination])
        again = await observe([(by_key[source], pods) for source, pods in destinations.items()], probe, port)
        observed.update({pair: seen for pair, seen in again.items() if seen is not None})


@dataclass(frozen=True)
class SegmentationStatus:
    """What the operator records in `status.segmentation` after a verification."""

    time: str  # RFC 3339, UTC
    correct: int
    incorrect: int
    enforced: bool | None  # None: nothing is expected to be blocked, so it cannot tell

    def to_status(self) -> dict[str, Any]:
        return {"time": self.time, "correct": self.correct, "incorrect": self.incorrect, "enforced": self.enforced}


@dataclass(frozen=True)
class VerificationReport:
    expected: Matrix
    observed: Matrix
    comparison: Matrix
    correct: int
    incorrect: int  # includes the unknown cells: nothing observed is nothing proven
    unknown: int
    enforced: bool | None
    time: str
    # Rendered NetworkPolicies of the architecture absent from the namespace (deleted by hand, say):
    # expected is judged against the render, so their absence is a finding, never a pass.
    missing_policies: tuple[str, ...] = ()
    judged_against: str = "present"  # "rendered": the Architecture's own policies; "present": what the namespace has

    @property
    def ok(self) -> bool:
        return self.incorrect == 0 and not self.missing_policies

    def to_dict(self) -> dict[str, Any]:
        """The machine-readable report (`simiankube verify -o json|yaml`)."""

        def table(matrix: Matrix) -> dict[str, Any]:
            return {"rows": list(matrix.rows), "columns": list(matrix.columns),
                    "cells": [[matrix.cells[(row, column)] for column in matrix.columns] for row in matrix.rows]}

        return {
            "time": self.time,
            "ok": self.ok,
            "legend": LEGEND,
            "counts": {"correct": self.correct, "incorrect": self.incorrect, "unobserved": self.unknown},
            "enforced": self.enforced,
            "judgedAgainst": self.judged_against,
            "missingPolicies": list(self.missing_policies),
            "expected": table(self.expected),
            "observed": table(self.observed),
            "comparison": table(self.comparison),
        }

    def status(self) -> SegmentationStatus:
        return SegmentationStatus(self.time, self.correct, self.incorrect, self.enforced)

    def text(self) -> str:
        parts = [
            f"legend: {LEGEND}",
            "expected:", self.expected.text(),
            "observed:", self.observed.text(),
            "comparison (. correct, X incorrect, ? not observed):", self.comparison.text(),
        ]
        if self.unknown:
            parts.append(f"not observed: {self.unknown} (probe requests failed on every try; counted as incorrect)")
        if self.enforced is False:
            parts.append(f"NOT ENFORCED: {NOT_ENFORCED_HELP}")
        if self.missing_policies:
            parts.append(f"MISSING NetworkPolicies the architecture renders: {', '.join(self.missing_policies)}")
        parts.append(f"reachability: correct:{self.correct}, incorrect:{self.incorrect}")
        return "\n".join(parts) + "\n"


def _judge(values: set[bool | None]) -> str:
    """A comparison cell: wrong if any pair is wrong, unknown if any is unobserved."""
    if False in values:
        return BLOCKED
    if None in values:
        return UNKNOWN
    return ALLOWED


def enforcement(pairs: Iterable[tuple[bool, bool | None]]) -> bool | None:
    """From (expected, observed) pairs: False when every expected block was observed open."""
    blocked_observed = [observed for expected, observed in pairs if not expected and observed is not None]
    if not blocked_observed:
        return None
    return not all(blocked_observed)


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def verify(
    pods: Sequence[Pod],
    namespaces: Sequence[Namespace],
    policies: Sequence[Mapping[str, Any]],
    probe: Prober,
    *,
    by_pod: bool = False,
    port: int = contract.HTTP_PORT,
    group_label: str = contract.LABEL_SERVICE,
    recheck_pauses: Sequence[float] = RECHECK_PAUSES,
) -> VerificationReport:
    """Probe every pod from every pod and compare with what `policies` allow."""
    model = Model(pods, namespaces, policies)
    expected = {(source.key, destination.key): model.allowed(source, destination, port)
                for source in pods for destination in pods}
    observed = await observe([(source, pods) for source in pods], probe, port)
    await recheck(observed, expected, pods, probe, port, recheck_pauses)

    def group(pod: Pod) -> str:
        return pod.name if by_pod else pod.labels.get(group_label, pod.name)

    names = list(dict.fromkeys(group(p) for p in pods))
    rows = []
    for source in pods:
        for destination in pods:
            expected_open = expected[(source.key, destination.key)]
            seen = observed[(source.key, destination.key)]
            rows.append((group(source), group(destination), source.key == destination.key, expected_open, seen))
    expected_matrix = matrix_from_observations(names, names, ((s, d, e, self_) for s, d, self_, e, _ in rows))
    observed_matrix = matrix_from_observations(names, names, ((s, d, o, self_) for s, d, self_, _, o in rows))
    comparison = matrix_from_observations(
        names,
        names,
        ((s, d, None if o is None else o == e, self_) for s, d, self_, e, o in rows),
        summary=_judge,
    )
    symbols = list(comparison.cells.values())
    unknown = symbols.count(UNKNOWN)
    return VerificationReport(
        expected=expected_matrix,
        observed=observed_matrix,
        comparison=comparison,
        correct=symbols.count(ALLOWED),
        incorrect=symbols.count(BLOCKED) + unknown,
        unknown=unknown,
        enforced=enforcement((e, o) for _, _, self_, e, o in rows if not self_),
        time=now_rfc3339(),
    )
