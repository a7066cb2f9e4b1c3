"""Trace context: what is accepted, what is passed on, and the shape of the trace a user request makes."""

from __future__ import annotations

import collections
import json
import random
from pathlib import Path

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from simiankube import contract
from simiankube.nanoservice.hop import Hop
from simiankube.nanoservice.launch import Launch
from simiankube.nanoservice.tracing import incoming_context, span_name
from simiankube.testing.wait import wait_for

from tests.nanoservice.conftest import Mesh

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def context(**headers: str):  # type: ignore[no-untyped-def]
    return incoming_context(CIMultiDictProxy(CIMultiDict(headers)), random.Random(1))


def test_a_valid_traceparent_is_continued_with_its_sampled_flag_and_tracestate() -> None:
    ctx = context(traceparent=f"00-{TRACE}-{SPAN}-00", tracestate="congo=t61rcWkgMzE")
    assert (ctx.trace_id, ctx.parent_id, ctx.sampled, ctx.tracestate) == (TRACE, SPAN, False, "congo=t61rcWkgMzE")
    headers = Hop(0.0, 1, 16, ctx.child(random.Random(2))).outgoing(1.0, "a", ctx.child(random.Random(2)))
    assert headers["traceparent"].startswith(f"00-{TRACE}-") and headers["traceparent"].endswith("-00")
    assert headers["tracestate"] == "congo=t61rcWkgMzE"
    assert context(traceparent=f"00-{TRACE}-{SPAN}-01").sampled is True
    assert context(b3=f"{TRACE}-{SPAN}-0").sampled is False
    assert context(**{"X-B3-TraceId": TRACE[16:], "X-B3-SpanId": SPAN}).trace_id == TRACE[16:].rjust(32, "0")


@pytest.mark.parametrize("header", [
    f"00-0x{TRACE[2:]}-{SPAN}-01",  # 0x prefix
    f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
    f"00-{TRACE.upper()}-{SPAN}-01",  # upper case
    f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
    f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has exactly four fields
    f"00-{TRACE}-{SPAN}-x1",  # flags not hex
    f"00-{TRACE}-+0f067aa0ba902b7-01",
])
def test_invalid_traceparents_start_a_new_trace(header: str) -> None:
    ctx = context(traceparent=header, tracestate="a=b")
    assert ctx.trace_id != TRACE and ctx.parent_id is None and ctx.tracestate == ""


def test_a_later_version_may_carry_more_fields() -> None:
    assert context(traceparent=f"01-{TRACE}-{SPAN}-01-future").trace_id == TRACE


def test_span_names_carry_the_route_not_the_key() -> None:
    assert span_name("get", "/kv/user42?direct=1") == "GET /kv/{key}"
    assert span_name("POST", "/replicate?spread=1") == "POST /replicate"


def test_the_pod_ip_is_the_span_address() -> None:
    launch = Launch.from_env({contract.ENV_POD_IP: "10.1.2.3", contract.ENV_INSTANCE: "p-0"})
    assert (launch.host, launch.pod_ip) == ("0.0.0.0", "10.1.2.3")


def test_a_user_request_is_one_tree_rooted_at_the_traffic_source(mesh: Mesh) -> None:
    mesh.load(
        [
            {"name": "db", "package": "store", "count": 1},
            {"name": "lb", "package": "elb", "count": 0, "dependencies": ["db"]},
            {"name": "users", "package": "denominator", "count": 0, "regions": 0, "dependencies": ["lb"]},
        ],
        traffic={"intervalMs": 20},
    )
    mesh.start_all()

    def spans() -> list[dict[str, object]]:
        path = Path(mesh.zipkin)
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def per_service(found: list[dict[str, object]]) -> dict[str, int]:
        return collections.Counter(s["localEndpoint"]["serviceName"] for s in found)  # type: ignore[index]

    wait_for(lambda: len(spans()) > 60, 15, message="spans of a few user requests")
    first = spans()
    # Each process flushes its spans every second: once every service has written more since `first`, every
    # span of a trace whose root was already in `first` (children end before their parents) is in the file.
    before = per_service(first)

    def flushed_again() -> list[dict[str, object]] | None:
        now = spans()
        return now if all(per_service(now)[name] > before[name] for name in ("users", "lb", "db")) else None

    found = wait_for(flushed_again, 15, message="a flush of every service after the first read")
    roots = [s for s in found if "parentId" not in s]
    assert roots and all(s["kind"] == "SERVER" and s["localEndpoint"]["serviceName"] == "users"  # type: ignore[index]
                         for s in roots)
    ids = {s["id"] for s in found}
    complete = {s["traceId"] for s in first if "parentId" not in s}
    assert all(s["parentId"] in ids for s in found if s["traceId"] in complete and "parentId" in s)
    assert {s["name"] for s in found} <= {"GET /kv/{key}", "PUT /kv/{key}"}
    addresses = {s["localEndpoint"]["ipv4"] for s in found}  # type: ignore[index]
    assert "0.0.0.0" not in addresses and all(a.startswith("127.") for a in addresses)  # type: ignore[attr-defined]
