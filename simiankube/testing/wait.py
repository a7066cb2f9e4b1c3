"""Condition waits for tests: poll a predicate until it holds or time runs out."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold within its timeout."""


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.2,
    message: str = "condition",
) -> T:
    """Call ``predicate`` until it returns a truthy value and return that value.

    Args:
        predicate: called repeatedly; a truthy return ends the wait. An
            exception raised by it propagates (the wait does not swallow bugs).
        timeout: seconds to wait in total before giving up.
        interval: seconds between calls (default 0.2: fast enough for a
            control plane whose controllers react in well under a second).
        message: what is being waited for, used in the error.

    Raises:
        WaitTimeout: the predicate never returned a truthy value in time; the
            error names ``message``, the timeout and the last value returned.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise WaitTimeout(
                f"timed out after {timeout:.0f}s waiting for {message} (last value: {last!r})"
            )
        time.sleep(interval)
