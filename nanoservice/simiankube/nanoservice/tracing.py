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
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

MAX_BUFFERED = 10_000
BATCH = 500
FLUSH_SECONDS = 1.0
KV_ROUTE = "/kv/{key}"  # span names carry the route, not the key (low cardinality, as OpenTelemetry names spans)
_HEX = {32: re.compile(r"[0-9a-f]{32}"), 16: re.compile(r"[0-9a-f]{16}"), 2: re.compile(r"[0-9a-f]{2}")}


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits: this span
    parent_id: str | None  # the caller's span, None at the root
    sampled: bool = True  # the caller's decision; spans of an unsampled trace are not exported
    tracestate: str = ""  # W3C vendor state, passed on unchanged

    def child(self, rng: random.Random) -> TraceContext:
        return TraceContext(self.trace_id, new_span_id(rng), self.span_id, self.sampled, self.tracestate)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


def span_name(method: str, path: str) -> str:
    """`GET /kv/{key}`: the route, so every key's request has one name."""
    route = KV_ROUTE if path.startswith("/kv/") else path.split("?")[0]
    return f"{method.upper()} {route}"


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
    """Exactly `length` lowercase hex digits, not all zero (W3C and B3 ids); anything else (a 0x prefix,
    signs, spaces, upper case) is invalid. 64-bit B3 trace ids are widened to 128 bits."""
    if len(value) == 16 and length == 32:
        value = value.rjust(32, "0")
    if not _HEX[length].fullmatch(value) or value.strip("0") == "":
        return None
    return value


def _traceparent(header: str) -> tuple[str | None, str | None, bool]:
    """W3C traceparent `version-traceid-parentid-flags`: version ff is invalid, version 00 has exactly four
    fields, later versions may append fields."""
    parts = header.strip().split("-")
    if len(parts) < 4 or not _HEX[2].fullmatch(parts[0]) or parts[0] == "ff" or not _HEX[2].fullmatch(parts[3]):
        return None, None, True
    if parts[0] == "00" and len(parts) != 4:
        return None, None, True
    return _hex(parts[1], 32), _hex(parts[2], 16), bool(int(parts[3], 16) & 1)


def _b3_sampled(flag: str) -> bool:
    return flag.strip() not in ("0", "false")  # "1", "d" (debug), "true" or absent: sampled


def incoming_context(headers: CIMultiDictProxy[str], rng: random.Random) -> TraceContext:
    """This server span's context: a child of the caller's span when the caller sent a valid one."""
    trace_id: str | None = None
    span_id: str | None = None
    sampled = True
    tracestate = ""
    if "traceparent" in headers:
        trace_id, span_id, sampled = _traceparent(headers["traceparent"])
        tracestate = headers.get("tracestate", "").strip()
    elif "b3" in headers:
        parts = headers["b3"].strip().split("-")
        if len(parts) >= 2:
            trace_id, span_id = _hex(parts[0], 32), _hex(parts[1], 16)
            sampled = len(parts) < 3 or _b3_sampled(parts[2])
    elif "x-b3-traceid" in headers:
        trace_id, span_id = _hex(headers["x-b3-traceid"], 32), _hex(headers.get("x-b3-spanid", ""), 16)
        sampled = _b3_sampled(headers.get("x-b3-sampled", "1"))
    if trace_id is None or span_id is None:
        return new_trace(rng)
    return TraceContext(trace_id, new_span_id(rng), span_id, sampled, tracestate)


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
