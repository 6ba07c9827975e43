"""The sign-in limit: 10 wrong passwords a minute and 50 an hour per client address.

Counted in the database, atomically before the password is checked, so every
web process shares one count and concurrent guesses cannot slip past it.
Details: RELIABILITY.md, "Design notes".
"""
from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from datetime import datetime

from jobflow.models import LoginAttempts

# (attempts, window in seconds), checked in this order.
LOGIN_LIMITS = ((10, 60), (50, 3600))


def client_key(address: str | None) -> str:
    """What the limit counts by: the IPv4 address, or the /64 network of an IPv6 address."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class Attempt:
    """One counted sign-in attempt: refused when ``retry_after`` (seconds) is set."""
    client: str
    counted: list[tuple[int, datetime]] = field(default_factory=list)   # (window seconds, window end)
    retry_after: int | None = None


def take_attempt(address: str | None, now: datetime) -> Attempt:
    """Count a sign-in attempt of ``address``; its ``retry_after`` is set when it is over a limit."""
    attempt = Attempt(client_key(address))
    for allowed, seconds in LOGIN_LIMITS:
        count, window_end = LoginAttempts.hit(attempt.client, seconds, now)
        attempt.counted.append((seconds, window_end))
        if count > allowed:
            attempt.retry_after = max(1, math.ceil((window_end - now).total_seconds()))
            break
    return attempt


def give_back(attempt: Attempt) -> None:
    """The attempt had the right password: it does not count against the client."""
    for seconds, window_end in attempt.counted:
        LoginAttempts.give_back(attempt.client, seconds, window_end)
