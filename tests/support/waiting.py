"""``wait_until``: the one way a test waits for something (poll until true, fail with what was seen)."""
from __future__ import annotations

import time

from pymongo.errors import PyMongoError


def wait_until(what: str, check, timeout: float = 90, every: float = 0.5, processes=(), seen=None):
    """Poll ``check`` until it returns something truthy (returned); fail with what was last seen.

    An error from the database or the network counts as "not yet". ``processes`` must stay up; ``seen``
    is a callable describing the current state for the failure message.
    """
    started = time.monotonic()
    last, error = None, None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except (OSError, PyMongoError, ValueError, KeyError) as exc:
            error = exc
        for proc in processes:
            if not proc.alive():
                raise AssertionError(f"{proc.name} exited with {proc.returncode} while waiting for {what}:\n"
                                     f"{proc.tail()}")
        if time.monotonic() - started > timeout:
            try:
                state = seen() if seen else last
            except (OSError, PyMongoError) as exc:
                state = type(exc).__name__
            tails = "".join(f"\n--- {p.name} (last lines) ---\n{p.tail(2500)}" for p in processes)
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {state!r}; "
                                 f"last error: {error!r}{tails}")
        time.sleep(every)


def seconds_until(what: str, check, timeout: float = 90, every: float = 0.2, processes=(), seen=None) -> float:
    """``wait_until``, for a test that measures: the seconds the condition took."""
    started = time.monotonic()
    wait_until(what, check, timeout, every, processes, seen)
    return time.monotonic() - started
