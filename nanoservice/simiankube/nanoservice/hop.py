"""The budget a request carries: a deadline, a hop count and the hop limit.

Every call sends the remaining budget (not a wall-clock deadline: clocks of
pods differ) and the hop count together with the limit, so a service that is
not a traffic source still enforces the limit its traffic source chose.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from multidict import CIMultiDictProxy

from simiankube.nanoservice.tracing import TraceContext

HEADER_BUDGET = "x-simiankube-deadline-ms"  # remaining budget in milliseconds when sent
HEADER_HOPS = "x-simiankube-hops"  # hops so far; the receiver is hop number HOPS
HEADER_MAX_HOPS = "x-simiankube-max-hops"
HEADER_CALLER = "x-simiankube-caller"  # calling service (metrics edges)
ANONYMOUS = "-"  # caller label of requests from outside the architecture


class BadHeader(ValueError):
    """A budget header that is not a number in range: the caller's bug, answered 400."""


@dataclass(slots=True)
class Hop:
    """Not frozen: one is built per request, and a frozen dataclass sets each field through object.__setattr__
    (about four times the cost of building it). Nothing changes a hop once built."""

    deadline: float  # time.monotonic() instant when the caller gives up
    hops: int
    max_hops: int
    trace: TraceContext

    def remaining(self) -> float:
        """Seconds of budget left."""
        return self.deadline - time.monotonic()

    def outgoing(self, budget: float, caller: str, trace: TraceContext) -> dict[str, str]:
        """Headers of a call made with `budget` seconds, one hop further."""
        headers = {
            HEADER_BUDGET: f"{max(budget, 0.0) * 1000:.3f}",
            HEADER_HOPS: str(self.hops + 1),
            HEADER_MAX_HOPS: str(self.max_hops),
            HEADER_CALLER: caller,
            "traceparent": trace.traceparent,
        }
        if trace.tracestate:
            headers["tracestate"] = trace.tracestate
        return headers


def _number(name: str, text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadHeader(f"header {name}: expected a number, got {text[:64]!r}") from None
    if not low <= value <= high:  # also rejects nan
        raise BadHeader(f"header {name}: must be between {low:g} and {high:g}, got {text[:64]!r}")
    return value


def incoming_hop(headers: CIMultiDictProxy[str], trace: TraceContext, *, budget_ms: float, max_hops: int,
                 now: float) -> Hop:
    """The hop of a request received at `now` (time.monotonic()). The architecture's budget and hop limit are
    what a request from outside gets and the most any caller may ask for: more is a 400, and so is a hop count
    below 1 (extra hops)."""
    budget, hops, limit = headers.get(HEADER_BUDGET), headers.get(HEADER_HOPS), headers.get(HEADER_MAX_HOPS)
    return Hop(
        now + (budget_ms if budget is None else _number(HEADER_BUDGET, budget, -1e9, budget_ms)) / 1000.0,
        1 if hops is None else int(_number(HEADER_HOPS, hops, 1, 1_000_000)),
        max_hops if limit is None else int(_number(HEADER_MAX_HOPS, limit, 1, max_hops)),
        trace,
    )
