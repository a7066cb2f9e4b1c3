"""The nanoservice's hand-written metrics: the same bytes as prometheus_client, bounded labels, every answer counted."""

from __future__ import annotations

import asyncio
import random

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from simiankube.nanoservice.metrics import BUCKETS, CLASSES, OTHER, PREFIX, Edge, Metrics
from tests.nanoservice.conftest import Mesh

PEERS = ["plain", "dash-ed", 'quo"te', "back\\slash", "new\nline", 'a="b",c', "ünï"]


def reference(metrics: Metrics) -> bytes:
    """prometheus_client's own text for the observations held in `metrics` (children created in the same order)."""
    registry = CollectorRegistry(auto_describe=False)

    def family(name: str, doc: str, kind: str, label: str) -> Counter | Histogram:
        labels = ["service", "package", label] + (["code"] if kind == "answers" else [])
        if kind == "histogram":
            return Histogram(f"{PREFIX}_{name}", doc, labels, registry=registry, buckets=BUCKETS)
        return Counter(f"{PREFIX}_{name}", doc, labels, registry=registry)

    for families, label, edges in metrics.sections():
        for name, doc, kind, read in families:
            built = family(name, doc, kind, label)
            for other, edge in edges.items():
                counted = [(c, n) for c, n in zip(CLASSES, edge.answers) if n] if kind == "answers" else [("", 0)]
                for code, count in counted:
                    child = built.labels(metrics.service, metrics.package, other, *([code] if code else []))
                    child._created = edge.created  # the only value that is not an observation
                    if kind == "histogram":
                        for bound, n in zip((*BUCKETS, float("inf")), edge.buckets):
                            for _ in range(n):
                                child.observe(bound)
                        child._sum.set(edge.seconds)
                    else:
                        child.inc(count if kind == "answers" else read(edge))
    return generate_latest(registry)


def test_exposition_is_byte_identical_to_prometheus_client() -> None:
    rng = random.Random(3)
    metrics = Metrics("svc", 'pack"age', callers=PEERS)
    for peer in PEERS:
        for edge in (metrics.server(peer), metrics.client(peer), metrics.traffic(peer), metrics.replication(peer)):
            edge.requests += rng.randint(1, 100)
            edge.errors += rng.randint(0, 5)
            edge.timeouts += rng.randint(0, 5)
            edge.retries += rng.randint(0, 3)
            for _ in range(40):
                edge.observe(rng.choice([0.0, *BUCKETS, 11.0, rng.random() * 3]))
            for _ in range(20):
                edge.answered(rng.choice([200, 201, 304, 400, 404, 413, 500, 502, 504, 99, 600]))
    ours = metrics.exposition()
    assert ours == reference(metrics)
    assert b'code="4xx"' in ours and b'caller="quo\\"te"' in ours and b"+Inf" in ours
    empty = Metrics("svc", "store")
    assert empty.exposition() == reference(empty)


def test_observe_lands_in_prometheus_buckets() -> None:
    edge = Edge()
    for value in (0.0001, 0.00010001, 10.0, 10.5):
        edge.observe(value)
    assert edge.buckets[0] == 1 and edge.buckets[1] == 1 and edge.buckets[len(BUCKETS) - 1] == 1
    assert edge.buckets[-1] == 1 and edge.seconds == 0.0001 + 0.00010001 + 10.0 + 10.5


def test_answers_by_status_class() -> None:
    edge = Edge()
    for status in (200, 204, 404, 500, 504, 508):
        edge.answered(status)
    assert edge.answers == [0, 2, 0, 1, 3] and (edge.errors, edge.timeouts) == (3, 1)


def test_unknown_callers_share_one_label() -> None:
    metrics = Metrics("db", "store", callers=["web"])
    assert metrics.server("web") is not metrics.server(OTHER)
    assert metrics.server("db") is not metrics.server(OTHER)  # ring members and replicas call their own service
    first = metrics.server("stranger-0")
    assert all(metrics.server(f"stranger-{i}") is first for i in range(5000))
    assert first is metrics.server(OTHER) and set(metrics._server) == {"web", "db", OTHER}


def test_5000_caller_names_do_not_grow_metrics_or_memory(mesh: Mesh) -> None:
    """A real process: after 5,000 invented caller names /metrics holds the same series, the memory the same."""
    mesh.load([{"name": "web", "package": "karyon", "count": 1, "dependencies": ["db"]},
                       {"name": "db", "package": "store", "count": 1}])
    [db] = mesh.service("db")
    mesh.start(db.name)
    url = mesh.url(db, "/kv/k")

    async def send(names: range) -> list[int]:
        async with aiohttp.ClientSession() as session:
            async def one(i: int) -> int:
                async with session.get(url, headers={"x-simiankube-caller": f"caller-{i}"}) as response:
                    return response.status
            return [await one(i) for i in names]

    def series() -> list[str]:
        text = asyncio.run(_get(mesh.url(db, "/metrics")))
        return [line.rpartition(" ")[0] for line in text.splitlines() if not line.startswith("simiankube_spans")]

    pid = mesh.processes[0].pid
    assert set(asyncio.run(send(range(1000)))) == {404}  # warm up: allocator arenas, connection buffers
    before, rss = series(), [_rss_kib(pid)]
    for start in (1000, 3000):
        assert set(asyncio.run(send(range(start, start + 2000)))) == {404}
        rss.append(_rss_kib(pid))
    after = series()
    assert after == before
    assert any('caller="other"' in line and 'code="4xx"' in line for line in after)
    assert not any("caller-" in line for line in after)
    print(f"RSS KiB after 1,000 / 3,000 / 5,000 caller names: {rss}")
    # No state per name. The allocator may still grow a little under a fast loop of requests (up to ~2.5 MiB
    # seen); an edge per name (four prometheus_client children, ~6 KiB) would add ~12 MiB per 2,000 names.
    assert rss[2] - rss[1] < 6144


async def _get(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.text()


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_every_answer_is_counted_with_its_status_class(mesh: Mesh) -> None:
    mesh.load([{"name": "db", "package": "store", "count": 1}])
    [db] = mesh.service("db")
    mesh.start(db.name)
    assert mesh.call(db, "PUT", "/kv/k", b"v")[0] == 200
    assert mesh.call(db, "GET", "/kv/k")[0] == 200
    assert mesh.call(db, "GET", "/kv/missing")[0] == 404
    assert mesh.call(db, "GET", "/kv/x", headers={"x-simiankube-deadline-ms": "soon"})[0] == 400
    text = asyncio.run(_get(mesh.url(db, "/metrics")))
    counted = {line.split('code="')[1][:3]: float(line.rpartition(" ")[2]) for line in text.splitlines()
               if line.startswith("simiankube_server_responses_total")}
    assert counted == {"2xx": 2.0, "4xx": 2.0}
