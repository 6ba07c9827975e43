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

from jobflow.models import Lease
from jobflow.similarity import stored_correction
from jobflow.similarity.correction import MIN_JOBS
from jobflow.timeutil import iso, ms, utcnow

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


def run_if_due(settings: dict, owner: str, recompute: Callable[[Callable[[int, int], None]], int],
               refit: Callable[[], bool] | None = None,
               write: Callable[[Callable[[int, int], None]], int] | None = None) -> int:
    """Under the lease: the full recompute when due; else, when ``refit`` is given (the language correction may
    have moved), try it, and when it adopted a new correction ``write`` every list. The lists written, 0 when
    nothing ran. Progress goes to the state document (the dashboard shows it) and to the log every tenth.
    """
    due = is_due(settings)
    if not (due or refit) or not Lease.acquire(LEASE, owner, LEASE_TTL):
        return 0
    try:
        reason = "full recompute"
        if not due:
            if not refit():
                return 0
            reason, recompute = "language correction changed", write
        started = time.monotonic()
        count = recompute(_progress_reporter(reason))
        seconds = round(time.monotonic() - started, 2)
        _states().update_one({"_id": STATE_ID}, {"$set": {"lastRunAt": utcnow(), "lastCount": count,
                                                          "lastSeconds": seconds, "lastReason": reason},
                                                 "$unset": {"progress": ""}}, upsert=True)
        log.info("recomputed %d similar-jobs lists in %.1fs (%s)", count, seconds, reason)
        return count
    finally:
        Lease.release(LEASE, owner)


def _progress_reporter(reason: str) -> Callable[[int, int], None]:
    """A progress callback: the state document at most once a second, a log line every tenth."""
    marks = {"written": 0.0, "tenth": -1}
    started = utcnow()

    def report(done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        now = time.monotonic()
        if now - marks["written"] >= 1.0 or done >= total:
            marks["written"] = now
            _states().update_one({"_id": STATE_ID}, {"$set": {"progress": {
                "done": done, "total": total, "reason": reason, "startedAt": started}}}, upsert=True)
        if tenth != marks["tenth"]:
            marks["tenth"] = tenth
            log.info("recomputing similar-jobs lists (%s): %d of %d (%d%%)", reason, done, total,
                     done * 100 // max(total, 1))
    return report


def correction_summary(settings: dict, model: str) -> str:
    """One line on the language correction in force for ``model``, for the settings page."""
    if not settings.get("SIMILARITY_LANGUAGE_BALANCE", True):
        return "off (SIMILARITY_LANGUAGE_BALANCE=false): raw cosine scores"
    head = stored_correction.header(model)
    if not head.get("version"):
        return (f"on; not fitted yet (needs {MIN_JOBS} embedded jobs of one language; the next check within a "
                "minute fits it)")
    counts = ", ".join(f"{lang} {n:,}" for lang, n in sorted((head.get("counts") or {}).items()) if lang != "*")
    lists = "every list computed with it" if head.get("listsVersion") == head["version"] else \
        "lists being recomputed with it"
    progress = state().get("progress")
    if progress:
        lists += f" ({progress['done']:,} of {progress['total']:,})"
    return (f"on; version {head['version']} fitted on {head.get('jobs', 0):,} jobs ({counts}) at "
            f"{iso(head.get('fittedAt'))}; {lists}")
