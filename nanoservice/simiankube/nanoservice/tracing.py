"""Trace context (W3C traceparent, B3 accepted) and Zipkin v2 span export.

Spans are only built when an exporter is configured; the context is always
propagated so traces stay whole through services that do not export (a
service that neither exports nor calls out has nothing to propagate to and
skips it).
Export never blocks a request: spans go to a bounded buffer that a
background task flushes in batches; when the buffer is full, spans are dropped
and counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

MAX_BUFFERED = 10_000
BATCH = 500
FLUSH_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits: this span
    parent_id: str | None  # the caller's span, None at the root

    def child(self, rng: random.Random) -> TraceContext:
        return TraceContext(self.trace_id, new_span_id(rng), self.span_id)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"


# The context of requests whose context nobody reads: a service that neither exports spans nor calls out.
UNTRACED = TraceContext("0" * 32, "0" * 16, None)


def _random_hex(rng: random.Random, bits: int) -> str:
    """A non-zero random id as bits/4 hex digits (to_bytes().hex() formats several times faster than f"{:032x}")."""
    return (rng.getrandbits(bits) or 1).to_bytes(bits // 8).hex()


def new_span_id(rng: random.Random) -> str:
    return _random_hex(rng, 64)


def new_trace(rng: random.Random) -> TraceContext:
    return TraceContext(_random_hex(rng, 128), new_span_id(rng), None)


def _hex(value: str, length: int) -> str | None:
    value = value.strip().lower()
    if len(value) == 16 and length == 32:
        value = value.rjust(32, "0")  # 64-bit B3 trace ids
    if len(value) != length or value.strip("0") == "":
        return None
    try:
        int(value, 16)
    except ValueError:
        return None
    return value


def incoming_context(headers: CIMultiDictProxy[str], rng: random.Random) -> TraceContext:
    """This server span's context: a child of the caller's span when the caller sent one."""
    parent: tuple[str | None, str | None] = (None, None)
    if "traceparent" in headers:
        parts = headers["traceparent"].split("-")
        if len(parts) >= 4:
            parent = (_hex(parts[1], 32), _hex(parts[2], 16))
    elif "b3" in headers:
        parts = headers["b3"].split("-")
        if len(parts) >= 2:
            parent = (_hex(parts[0], 32), _hex(parts[1], 16))
    elif "x-b3-traceid" in headers:
        parent = (_hex(headers["x-b3-traceid"], 32), _hex(headers.get("x-b3-spanid", ""), 16))
    trace_id, span_id = parent
    if trace_id is None:
        return new_trace(rng)
    return TraceContext(trace_id, new_span_id(rng), span_id)


def zipkin_span(
    context: TraceContext,
    *,
    name: str,
    kind: str,
    service: str,
    address: str,
    start: float,
    duration: float,
    remote: str = "",
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Zipkin v2 span; `start` is a wall-clock time in seconds, `duration` in seconds."""
    span: dict[str, Any] = {
        "traceId": context.trace_id,
        "id": context.span_id,
        "name": name,
        "kind": kind,
        "timestamp": int(start * 1_000_000),
        "duration": max(1, int(duration * 1_000_000)),
        "localEndpoint": {"serviceName": service, "ipv4": address},
    }
    if context.parent_id:
        span["parentId"] = context.parent_id
    if remote:
        span["remoteEndpoint"] = {"serviceName": remote}
    if tags:
        span["tags"] = tags
    return span


class SpanExporter:
    """Buffers spans and writes them as JSON lines to a file or POSTs them to Zipkin."""

    def __init__(self, *, file: str = "", url: str = "") -> None:
        self.file = file
        self.url = url
        self.buffer: list[dict[str, Any]] = []
        self.dropped = 0
        self.exported = 0

    @property
    def enabled(self) -> bool:
        return bool(self.file or self.url)

    def counts(self) -> tuple[int, int]:
        """(exported, dropped), for the metrics."""
        return self.exported, self.dropped

    def record(self, span: dict[str, Any]) -> None:
        if len(self.buffer) >= MAX_BUFFERED:
            self.dropped += 1
        else:
            self.buffer.append(span)

    async def flush(self, session: aiohttp.ClientSession) -> None:
        while self.buffer:
            batch, self.buffer = self.buffer[:BATCH], self.buffer[BATCH:]
            try:
                if self.file:
                    text = "".join(json.dumps(s, separators=(",", ":")) + "\n" for s in batch)
                    await asyncio.get_running_loop().run_in_executor(None, _append, self.file, text)
                if self.url:
                    timeout = aiohttp.ClientTimeout(total=2.0)
                    async with session.post(self.url, json=batch, timeout=timeout) as response:
                        response.raise_for_status()
            except (OSError, aiohttp.ClientError, asyncio.TimeoutError):
                self.dropped += len(batch)
            else:
                self.exported += len(batch)

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush(session)


def _append(path: str, text: str) -> None:
    """One write per batch on an O_APPEND descriptor: lines of processes sharing the file never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def wall_time(monotonic_start: float) -> float:
    """Wall-clock time of a monotonic instant (spans need epoch timestamps)."""
    return time.time() - (time.monotonic() - monotonic_start)
