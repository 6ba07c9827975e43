"""The admin API's limits, per client address and shared by every process and host (like the sign-in limit):
30 writes a minute, and 10 requests with a wrong API token a minute and 50 an hour.

Counted in the database (``requestcounts``) with one atomic ``$inc`` each, so two gunicorn processes
(or two hosts) allow what one does. A client over the wrong-token limit is refused before its token is
compared, so guessing stops there even for a right guess.
"""
from __future__ import annotations

import math
from datetime import datetime

from jobflow.models import RequestCounts
from jobflow.ops.login_limit import client_key

# (requests, window in seconds), checked in this order.
WRITE_LIMITS = ((30, 60),)
WRONG_TOKEN_LIMITS = ((10, 60), (50, 3600))


def _retry_after(window_end: datetime, now: datetime) -> int:
    return max(1, math.ceil((window_end - now).total_seconds()))


def _count(what: str, address: str | None, limits, now: datetime) -> int | None:
    """Count one request of ``what`` by ``address``: seconds until it may come again when over a limit, else None."""
    client = f"{what}|{client_key(address)}"
    for allowed, seconds in limits:
        count, window_end = RequestCounts.hit(client, seconds, now)
        if count > allowed:
            return _retry_after(window_end, now)
    return None


def take_write(address: str | None, now: datetime) -> int | None:
    """Count one admin API write of ``address``; the seconds to wait when it is over the limit, else None."""
    return _count("write", address, WRITE_LIMITS, now)


def wrong_token(address: str | None, now: datetime) -> int | None:
    """Count one request of ``address`` with a wrong API token; the seconds to wait when it is over a limit."""
    return _count("token", address, WRONG_TOKEN_LIMITS, now)


def token_refused(address: str | None, now: datetime) -> int | None:
    """The seconds ``address`` must wait before its API token is looked at again (too many wrong ones), or None."""
    open_windows = RequestCounts.open_windows(f"token|{client_key(address)}", [s for _, s in WRONG_TOKEN_LIMITS], now)
    for allowed, seconds in WRONG_TOKEN_LIMITS:
        count, window_end = open_windows.get(seconds, (0, now))
        if count >= allowed:
            return _retry_after(window_end, now)
    return None
