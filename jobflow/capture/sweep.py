"""Every job compared by text hash and status, in keyset pages: what the change stream would have caught.

It runs when the stream's history is gone (a long outage), and periodically in poll mode (writers that leave
``updatedAt`` alone). Jobs closed meanwhile leave the lists through the index's own reconciliation; deleted
ones too, and their queue items are skipped when claimed. Where the board keeps its jobs in a collection of its
own (JOBS_SOURCE_COLLECTION), the sweep first copies each page of it into jobs, and at the end deletes the copies
of documents gone from it.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from jobflow.capture.act import Change, apply
from jobflow.capture.decide import DECISION_FIELDS
from jobflow.capture.source import Source
from jobflow.models import CaptureState, Job
from jobflow.timeutil import utcnow

log = logging.getLogger("jobflow.capture")
PAGE = 500
LOG_EVERY = 10.0   # seconds between progress lines


def sweep(why: str, source: Source | None = None, keep_going: Callable[[], bool] = lambda: True,
          page: int = PAGE) -> dict:
    """Compare every job; progress in the log and in the capture state (the dashboard). The counts."""
    mirrored = source is not None and source.mirrored
    coll = source.collection() if mirrored else Job._get_collection()
    total = coll.estimated_document_count()
    started, last_log = utcnow(), time.monotonic()
    counts = {"state": "running", "why": why, "scanned": 0, "total": total, "enqueued": 0, "left": 0, "misfits": 0,
              "startedAt": started}
    log.info("capture sweep started (%s): comparing about %d jobs by text hash and status", why, total)
    _save(counts)
    after = None
    while True:
        if not keep_going():
            counts["state"] = "interrupted"
            break
        query = {"_id": {"$gt": after}} if after is not None else {}
        docs = list(coll.find(query, None if mirrored else DECISION_FIELDS).sort("_id", 1).limit(page))
        if not docs:
            counts["state"] = "done" if not mirrored else _drop_gone_copies(source, counts, keep_going)
            break
        after = docs[-1]["_id"]
        if mirrored:
            source.write(docs, [])
            outcome = apply([Change(d["_id"]) for d in docs], notes=False, source="sweep")
        else:
            outcome = apply([Change(d["_id"]) for d in docs], docs={d["_id"]: d for d in docs}, notes=False,
                            source="sweep")
        counts["scanned"] += len(docs)
        counts["enqueued"] += outcome.enqueued
        counts["left"] += outcome.left
        counts["misfits"] += outcome.misfits
        if time.monotonic() - last_log >= LOG_EVERY:
            last_log = time.monotonic()
            log.info("capture sweep: %d/%d jobs compared, %d queued", counts["scanned"], total, counts["enqueued"])
            _save(counts)
    counts["finishedAt"] = utcnow()
    seconds = (counts["finishedAt"] - started).total_seconds()
    log.info("capture sweep %s in %.1fs: %d jobs compared, %d queued, %d closed taken out of the queue, "
             "%d cannot be used", counts["state"], seconds, counts["scanned"], counts["enqueued"], counts["left"],
             counts["misfits"])
    _save(counts)
    return counts


def _drop_gone_copies(source: Source, counts: dict, keep_going: Callable[[], bool]) -> str:
    """Delete the copies of documents gone from the board's collection (and take them out of every list)."""
    after = None
    while True:
        if not keep_going():
            return "interrupted"
        gone, after = source.copies_gone(after)
        if gone:
            source.write([], gone)
            counts["left"] += apply([Change(i, deleted=True) for i in gone], source="sweep").left
        if after is None:
            return "done"


def _save(counts: dict) -> None:
    CaptureState._get_collection().update_one({"_id": "jobs"}, {"$set": {"sweep": dict(counts)}}, upsert=True)
