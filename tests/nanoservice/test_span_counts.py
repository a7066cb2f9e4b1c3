"""Lost spans are visible on /metrics, not silently dropped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from simiankube.nanoservice.metrics import Metrics
from simiankube.nanoservice.tracing import MAX_BUFFERED, SpanExporter


def sample(metrics: Metrics, name: str) -> float:
    for line in metrics.exposition().decode().splitlines():
        if line.startswith(f"simiankube_{name}_total{{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no simiankube_{name}_total sample")


def test_exported_and_dropped_spans_are_counted(tmp_path: Path) -> None:
    metrics = Metrics("db", "store")
    exporter = SpanExporter(file=str(tmp_path / "spans.jsonl"))
    metrics.watch_spans(exporter.counts)
    for i in range(MAX_BUFFERED + 3):
        exporter.record({"id": f"{i:016x}"})
    assert (sample(metrics, "spans_exported"), sample(metrics, "spans_dropped")) == (0.0, 3.0)

    async def flush() -> None:
        async with aiohttp.ClientSession() as session:
            await exporter.flush(session)

    asyncio.run(flush())
    assert (sample(metrics, "spans_exported"), sample(metrics, "spans_dropped")) == (MAX_BUFFERED, 3.0)
    assert len((tmp_path / "spans.jsonl").read_text().splitlines()) == MAX_BUFFERED


def test_a_failing_sink_counts_as_dropped(tmp_path: Path) -> None:
    metrics = Metrics("db", "store")
    exporter = SpanExporter(file=str(tmp_path / "missing-dir" / "spans.jsonl"))
    metrics.watch_spans(exporter.counts)
    exporter.record({"id": "1"})

    async def flush() -> None:
        async with aiohttp.ClientSession() as session:
            await exporter.flush(session)

    asyncio.run(flush())
    assert (sample(metrics, "spans_exported"), sample(metrics, "spans_dropped")) == (0.0, 1.0)
