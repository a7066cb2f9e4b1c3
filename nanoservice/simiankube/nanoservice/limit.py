"""How many requests one instance lets wait at once: a bound that adapts to how late answers come.

A fixed bound is right for one speed only. With a bound of N requests in
flight and X answers per second, each admitted request waits N / X seconds
(Little's law): 100 in flight is 25 ms on an idle core but 330 ms when the
process gets a fifth of one, past every caller's deadline, so all the work
done is wasted and goodput collapses.

The bound follows the budgets instead, like Netflix's concurrency-limits
(AIMD limit: additive increase, multiplicative decrease) with the deadline as
the signal: an admitted request that used more than `LATE_SHARE` of the
budget it arrived with was late. A late answer scales the bound by how late
it was (target / latency: what Little's law says would have kept it in time),
at most once per round trip (only a request admitted after the last cut can
show whether the cut was enough); an answer in time while the bound is at
least half used raises it by 1 / bound (about one per round trip). Requests
beyond the bound are shed at once (503 + Retry-After), which costs a small
fraction of the work it saves, and the caller retries another instance.
Merely slow answers (a busy machine, a long service time) lower nothing
while they arrive within their budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LATE_SHARE = 0.5  # an admitted request that took more than this share of its budget was late
MIN_LIMIT = 10.0  # the bound never goes below this (or the ceiling, when lower): a process starved of CPU by
# other work is slow whatever its concurrency, and must not cut itself down to nothing (Netflix AIMD: 20)


@dataclass(slots=True)
class ConcurrencyLimit:
    """The adaptive bound of one instance; the event loop is the only caller, so no lock."""

    ceiling: int  # the most requests ever admitted at once
    limit: float = field(init=False)  # the current bound, between the floor and the ceiling
    floor: float = field(init=False)
    in_flight: int = 0  # admitted and not yet answered
    cut_at: float = float("-inf")  # monotonic time of the last decrease

    def __post_init__(self) -> None:
        self.limit = float(self.ceiling)
        self.floor = min(MIN_LIMIT, float(self.ceiling))

    def admit(self) -> bool:
        """Take a place if one is free (False: shed the request)."""
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def release(self, started: float, now: float, budget: float) -> None:
        """An admitted request answered: it started at `started` with `budget` seconds and ends `now`."""
        used = self.in_flight
        self.in_flight -= 1
        elapsed, target = now - started, budget * LATE_SHARE
        if elapsed > target:
            if started >= self.cut_at:  # admitted under the current bound: the bound was too high
                self.limit = max(self.floor, self.limit * target / elapsed)
                self.cut_at = now
        elif 2 * used >= self.limit:
            self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)
