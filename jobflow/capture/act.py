"""Doing what changed jobs call for, a batch at a time, as the API would have done it."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pymongo import UpdateOne

from jobflow.capture.decide import DECISION_FIELDS, decide
from jobflow.db import commands
from jobflow.jobs import queue
from jobflow.jobs.store import record_deletion
from jobflow.models import Job, JobChange, JobMisfit
from jobflow.timeutil import utcnow

log = logging.getLogger("jobflow.capture")
NOTE_DAYS = 1


@dataclass
class Change:
    """One job written by someone: deleted, or changed (``text_touched``: a field of its text was written)."""
    job_id: object
    deleted: bool = False
    text_touched: bool = False
    status_touched: bool = False
    written_at: datetime | None = None
    inserted: bool = False


@dataclass
class Outcome:
    """What a batch did: jobs queued, taken out, found unusable, and each change's lag (ms)."""
    enqueued: int = 0
    left: int = 0
    misfits: int = 0
    lags_ms: list[int] = field(default_factory=list)


def merge(changes: list[Change]) -> list[Change]:
    """One change per job (in the order first seen): the latest state wins, touches add up, the earliest write
    time is kept (the lag is the longest wait)."""
    merged: dict = {}
    for change in changes:
        seen = merged.get(change.job_id)
        if seen is None:
            merged[change.job_id] = Change(change.job_id, change.deleted, change.text_touched, change.status_touched,
                                           change.written_at, change.inserted)
            continue
        seen.deleted = change.deleted
        seen.inserted |= change.inserted
        seen.text_touched |= change.text_touched
        seen.status_touched |= change.status_touched
        if change.written_at and (seen.written_at is None or change.written_at < seen.written_at):
            seen.written_at = change.written_at
    return list(merged.values())


def apply(changes: list[Change], docs: dict | None = None, notes: bool = True, source: str = "capture") -> Outcome:
    """Queue, take out and report what ``changes`` call for. ``docs`` (id -> document with DECISION_FIELDS)
    saves the read of those the caller has (an insert event carries its document); ``notes`` off (a sweep) leaves
    closed jobs to the index's own reconciliation instead of noting each for every worker."""
    changes = merge(changes)
    outcome = Outcome()
    if not changes:
        return outcome
    live = [c.job_id for c in changes if not c.deleted]
    docs = dict(docs or {})
    unread = [i for i in live if i not in docs]
    docs.update({d["_id"]: d for chunk in commands.chunks(unread)
                 for d in Job._get_collection().find({"_id": {"$in": chunk}}, DECISION_FIELDS)})
    # Whether an item is open matters only to a change that neither wrote the text nor inserted the job.
    open_items = queue.open_jobs([c.job_id for c in changes if not (c.deleted or c.text_touched or c.inserted)
                                  and c.job_id in docs])
    embed, embed_idle, embed_new, clear, deleted, left, misfits, fits, touched = [], [], {}, [], [], [], {}, [], []
    for change in changes:
        doc = None if change.deleted else docs.get(change.job_id)
        decision = decide(doc, change.job_id in open_items, change.text_touched)
        if decision.action == "misfit":
            misfits[change.job_id] = decision.reason
            continue
        if doc is not None:
            fits.append(change.job_id)
        if decision.action == "embed":
            if change.text_touched:
                embed.append(change.job_id)
            elif change.inserted and change.written_at:
                embed_new[change.job_id] = change.written_at
            else:
                embed_idle.append(change.job_id)
            stored = (doc.get("embedding") or {}).get("textHash")
            if stored and doc.get("similarJobs"):
                clear.append((change.job_id, stored))
        elif decision.action == "leave":
            (deleted if doc is None else left).append(change.job_id)
        elif change.status_touched:
            touched.append(change.job_id)     # reopened, or its language changed: back into the index
    if clear:
        # The old list described the old text: stop serving it until the new one exists (as the API does). The
        # stored hash in the filter leaves alone a job whose new embedding a worker stored meanwhile.
        commands.write_chunks([UpdateOne({"_id": job_id, "embedding.textHash": stored}, {"$set": {
            "embedding.status": "pending", "similarJobs": [], "similarityMetadata": {}}}) for job_id, stored in clear],
            lambda chunk: Job._get_collection().bulk_write(list(chunk), ordered=False))
    queued = 0
    if embed:
        # A new text: a new item even while one is being processed (it holds the old text).
        queued += queue.enqueue_many(embed, priority=queue.PRIORITY_LIVE, source=source)
    if embed_new:
        # Inserted: queued unless an item was created since (its writer's own, maybe completed by now).
        queued += queue.enqueue_new(embed_new, priority=queue.PRIORITY_LIVE, source=source)
    if embed_idle:
        # A new job, or one found unembedded: queued unless an item for it is waiting or being processed (the API's
        # own item, queued just after its insert).
        queued += queue.enqueue_idle(embed_idle, priority=queue.PRIORITY_LIVE, source=source)
    if deleted:
        queue.remove_for_jobs(deleted, ("pending", "failed"))
        for job_id in deleted:
            record_deletion(job_id)
    if left or misfits:
        queue.remove_for_jobs(left + list(misfits))
    if notes:
        note_changed(left + touched + list(misfits))
    _report_misfits(misfits, fits)
    now = utcnow()
    outcome.enqueued, outcome.left, outcome.misfits = queued, len(deleted) + len(left), len(misfits)
    outcome.lags_ms = [max(0, int((now - c.written_at).total_seconds() * 1000)) for c in changes if c.written_at]
    return outcome


def note_changed(job_ids: list) -> None:
    """Tell every worker's index sync that these jobs changed (closed, reopened, unusable)."""
    if not job_ids:
        return
    now = utcnow()
    commands.write_chunks([UpdateOne({"_id": job_id}, {"$set": {"at": now, "expiresAt": now + timedelta(days=NOTE_DAYS)}},
                                     upsert=True) for job_id in job_ids],
                          lambda chunk: JobChange._get_collection().bulk_write(list(chunk), ordered=False))


class _Listed:
    """Whether any unusable document is listed, looked up at most every few seconds: a batch of fitting jobs then
    costs no write to clear them from an empty list."""
    ttl = 5.0
    known = True
    checked = float("-inf")

    @classmethod
    def any(cls) -> bool:
        if time.monotonic() - cls.checked > cls.ttl:
            cls.known = JobMisfit._get_collection().find_one({}, {"_id": 1}) is not None
            cls.checked = time.monotonic()
        return cls.known


def _report_misfits(misfits: dict, fits: list) -> None:
    """Keep the list of unusable documents current; log each newly found one once."""
    coll = JobMisfit._get_collection()
    if fits and _Listed.any():
        coll.delete_many({"_id": {"$in": fits}})
    if not misfits:
        return
    _Listed.known = True
    known = {d["_id"]: d.get("reason") for d in coll.find({"_id": {"$in": list(misfits)}}, {"reason": 1})}
    now = utcnow()
    fresh = {job_id: reason for job_id, reason in misfits.items() if known.get(job_id) != reason}
    if fresh:
        coll.bulk_write([UpdateOne({"_id": job_id}, {"$set": {"reason": reason, "at": now}}, upsert=True)
                         for job_id, reason in fresh.items()], ordered=False)
        for job_id, reason in list(fresh.items())[:20]:
            log.warning("job %s cannot be used and is not embedded: %s", job_id, reason)
        if len(fresh) > 20:
            log.warning("%d more job documents cannot be used (listed on the dashboard)", len(fresh) - 20)
