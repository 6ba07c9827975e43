"""The full recompute of every similar-jobs list: when it is due, who asked, how the last one went.

Lists are kept current as jobs change; a full pass runs when an admin asks
(dashboard, admin API) and every SIMILARITY_RECOMPUTE_INTERVAL, in one worker
at a time under the ``recompute-similarity`` lease. Its state is one document
that every worker and the dashboard share.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Callable

from ..models import Lease
from ..timeutil import ms, utcnow

log = logging.getLogger("jobflow.worker")

STATE_ID = "recompute-similarity:state"   # in the leases collection, beside the lease itself
LEASE = "recompute-similarity"
LEASE_TTL = timedelta(minutes=30)


def _states():
    return Lease._get_collection()


def state() -> dict:
    """``requestedAt``, ``lastRunAt``, ``lastCount`` and ``lastSeconds`` (each may be missing)."""
    return _states().find_one({"_id": STATE_ID}) or {}


def request() -> None:
    """Ask the workers to recompute every list at their next check (within a minute)."""
    _states().update_one({"_id": STATE_ID}, {"$set": {"requestedAt": utcnow()}}, upsert=True)


def is_due(settings: dict, now: datetime | None = None) -> bool:
    """True when asked since the last run, or a full interval has passed; the first check starts the clock."""
    now = now or utcnow()
    current = state()
    last, asked = current.get("lastRunAt"), current.get("requestedAt")
    if last is None and asked is None:
        _states().update_one({"_id": STATE_ID}, {"$setOnInsert": {"lastRunAt": now}}, upsert=True)
        return False
    return (asked is not None and (last is None or asked > last)) or \
        (last is not None and now - last >= ms(settings["SIMILARITY_RECOMPUTE_INTERVAL"]))


def run_if_due(settings: dict, owner: str, recompute: Callable[[], int]) -> int:
    """Run ``recompute`` (returns the lists written) under the lease when due; the count, 0 when not run."""
    if not is_due(settings) or not Lease.acquire(LEASE, owner, LEASE_TTL):
        return 0
    try:
        started = time.monotonic()
        count = recompute()
        seconds = round(time.monotonic() - started, 2)
        _states().update_one({"_id": STATE_ID}, {"$set": {"lastRunAt": utcnow(), "lastCount": count,
                                                          "lastSeconds": seconds}}, upsert=True)
        log.info("recomputed %d similar-jobs lists in %.1fs", count, seconds)
        return count
    finally:
        Lease.release(LEASE, owner)
