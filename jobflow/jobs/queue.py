"""The embedding queue: the only writer of queue state.

Delivery is at least once; the effect is exactly once because every state
change is a single atomic update guarded by the item's current state and
owner. Higher ``priority`` is claimed first: live edits before back-fill.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from jobflow.db import commands
from jobflow.models import QueueItem
from jobflow.models.queue_item import FINISHED_STATUSES, QUEUE_STATUSES
from jobflow.timeutil import ms, utcnow

log = logging.getLogger("jobflow.queue")

GENERATE_EMBEDDING = "generate_embedding"
PRIORITY_LIVE = 10       # a job was created or its text changed
PRIORITY_BACKFILL = 5    # migration and re-embedding after a model change
PRIORITY_RECOMPUTE = 1   # bulk re-embedding asked for by an admin

ERROR_HISTORY_KEEP = 20
# A sorted read of the due items keeps this many claims' worth of candidates, for at most this long.
CANDIDATE_ROUNDS = 16
CANDIDATE_SECONDS = 60.0
CLAIM_ORDER = [("priority", -1), ("nextAttemptAt", 1), ("createdAt", 1)]


@dataclass(frozen=True)
class QueuePolicy:
    """How failures are retried and how long finished items are kept."""
    max_attempts: int = 3
    retry_delays_ms: tuple[int, ...] = (60000, 300000, 900000)
    cleanup_days: int = 7
    debug: bool = False

    @classmethod
    def from_settings(cls, settings: dict) -> "QueuePolicy":
        """The policy of the configured settings."""
        return cls(max_attempts=settings["QUEUE_MAX_ATTEMPTS"],
                   retry_delays_ms=tuple(settings["QUEUE_RETRY_DELAYS"]),
                   cleanup_days=settings["QUEUE_CLEANUP_DAYS"],
                   debug=settings.get("DEBUG_QUEUE", False))

    def retry_delay(self, attempts: int) -> timedelta:
        """Wait before the retry that follows attempt number ``attempts`` (1-based)."""
        delays = self.retry_delays_ms or (0,)
        return ms(delays[min(max(attempts, 1), len(delays)) - 1])


HUNG_FACTOR = 3   # a live worker holding an item this many QUEUE_STUCK_TIMEOUTs is hung


def _coll():
    return QueueItem._get_collection()


def _oid(value) -> ObjectId:
    return value if isinstance(value, ObjectId) else ObjectId(str(value))


def enqueue(job_id, task_type: str = GENERATE_EMBEDDING, priority: int = PRIORITY_LIVE,
            source: str = "api", migration_id: str | None = None) -> bool:
    """Queue a task for a job unless one is already pending (then raise its priority); True if queued."""
    created = _queue([{"jobId": _oid(job_id), "taskType": task_type, "status": "pending"}], priority, source,
                     migration_id) == 1
    if created:
        log.debug("enqueued %s for job %s (priority %s, source %s)", task_type, job_id, priority, source)
    return created


def enqueue_many(job_ids: Iterable, task_type: str = GENERATE_EMBEDDING, priority: int = PRIORITY_BACKFILL,
                 source: str = "migration", migration_id: str | None = None) -> int:
    """Queue many jobs in one bulk write (deduplicated like ``enqueue``); return how many were new."""
    return _queue([{"jobId": _oid(i), "taskType": task_type, "status": "pending"} for i in job_ids], priority, source,
                  migration_id)


def enqueue_idle(job_ids: Iterable, priority: int = PRIORITY_LIVE, source: str = "capture") -> int:
    """Queue each job that has no item pending or being processed, decided atomically per job (a worker may claim
    another writer's item between a look and a write); how many were queued."""
    return _queue([{"jobId": _oid(i), "taskType": GENERATE_EMBEDDING, "status": {"$in": ["pending", "processing"]}}
                   for i in job_ids], priority, source)


def enqueue_new(inserted: dict, priority: int = PRIORITY_LIVE, source: str = "capture") -> int:
    """Queue jobs just inserted (id -> when) unless an item was created for them since (their writer's own, maybe
    completed by now, which an idle check would miss); how many were queued. A second of slack covers clocks."""
    return _queue([{"jobId": _oid(i), "taskType": GENERATE_EMBEDDING, "createdAt": {"$gte": when - timedelta(seconds=1)}}
                   for i, when in inserted.items()], priority, source)


def _queue(matches: list[dict], priority: int, source: str, migration_id: str | None = None) -> int:
    """One upsert of a pending item per filter (a job, and what counts as its item already), in one bulk write;
    how many were new. A pending item another process wrote at the same moment counts as there already."""
    if not matches:
        return 0
    now = utcnow()
    fresh = {"status": "pending", "attempts": 0, "nextAttemptAt": now, "createdAt": now, "errorHistory": [],
             "metadata": {"source": source, **({"migrationId": migration_id} if migration_id else {})}}
    # A field the filter names with a plain value is copied from it into a new item; one under an operator is not.
    ops = [UpdateOne(match, {"$setOnInsert": {k: v for k, v in fresh.items() if isinstance(match.get(k, {}), dict)},
                             "$max": {"priority": priority}, "$set": {"updatedAt": now}}, upsert=True)
           for match in matches]

    def write(chunk) -> int:
        try:
            return _coll().bulk_write(list(chunk), ordered=False).upserted_count
        except BulkWriteError as exc:
            return int(exc.details.get("nUpserted", 0))

    return sum(commands.write_chunks(ops, write))


def claim(owner: str, limit: int, task_type: str = GENERATE_EMBEDDING) -> list[dict]:
    """Atomically take up to ``limit`` due items for ``owner``, best first; each claim spends an attempt."""
    claimed: list[dict] = []
    # A sorted read picks the candidates (a sorted find-and-modify per item scans the pending set once per
    # item), then one update per chunk takes those still pending: each document's update is atomic and
    # guarded by its state, so no item is claimed twice. A worker that loses a race for candidates takes
    # the next ones: every lost round means others took items, so the loop ends.
    key = (_coll().database.name, owner, task_type)
    while len(claimed) < limit:
        wanted = limit - len(claimed)
        now = utcnow()
        due = {"status": "pending", "taskType": task_type, "nextAttemptAt": {"$lte": now}}
        take = {"$set": {"status": "processing", "lockedBy": owner, "lockedAt": now, "updatedAt": now},
                "$inc": {"attempts": 1}}
        candidates = _candidates(key, due, wanted)
        if not candidates:
            break
        taken = sum(commands.write_chunks(
            candidates, lambda chunk: _coll().update_many({"_id": {"$in": chunk}, **due}, take).modified_count))
        if taken:
            # This owner claims one batch at a time, so lockedBy and lockedAt name exactly this round's items.
            mine = {d["_id"]: d for chunk in commands.chunks(candidates)
                    for d in _coll().find({"_id": {"$in": chunk}, "status": "processing", "lockedBy": owner,
                                           "lockedAt": now})}
            have = {d["_id"] for d in claimed}
            claimed += [mine[i] for i in candidates if i in mine and i not in have]
    return claimed


@dataclass
class _Kept:
    """Candidates of one sorted read, in claim order, not yet tried: (id, priority)."""
    items: list[tuple]
    read_at: float


_kept: dict[tuple, _Kept] = {}
_kept_lock = threading.Lock()


def _candidates(key: tuple, due: dict, wanted: int) -> list:
    """The next ``wanted`` ids to try, best first.

    One sorted read keeps CANDIDATE_ROUNDS claims' worth for up to CANDIDATE_SECONDS, because that read costs
    as much as every due item; items of a higher priority than the kept ones (a live edit) still go first.
    """
    with _kept_lock:
        kept = _kept.get(key)
        fresh = kept is not None and kept.items and time.monotonic() - kept.read_at < CANDIDATE_SECONDS
        if fresh:
            urgent = [d for d in _coll().find({"status": "pending", "priority": {"$gt": kept.items[0][1]}},
                                              {"taskType": 1, "priority": 1, "nextAttemptAt": 1, "createdAt": 1})
                      if d.get("taskType") == due["taskType"] and _is_due(d, due["nextAttemptAt"]["$lte"])]
            if urgent:
                urgent.sort(key=lambda d: (-d.get("priority", 0), d["nextAttemptAt"], d.get("createdAt") or d["nextAttemptAt"]))
                return [d["_id"] for d in urgent[:wanted]]
        else:
            rows = list(_coll().find(due, {"priority": 1}).sort(CLAIM_ORDER).limit(wanted * CANDIDATE_ROUNDS))
            if not rows:
                _kept.pop(key, None)
                return []
            kept = _kept[key] = _Kept([(d["_id"], int(d.get("priority") or 0)) for d in rows], time.monotonic())
        taken, kept.items = kept.items[:wanted], kept.items[wanted:]
        return [item_id for item_id, _ in taken]


def _is_due(item: dict, now) -> bool:
    at = item.get("nextAttemptAt")
    return at is not None and at.replace(tzinfo=None) <= now.replace(tzinfo=None)


def _finish_update(status: str, policy: QueuePolicy, now) -> dict:
    update = {"status": status, "finishedAt": now, "updatedAt": now}
    if status in ("completed", "skipped"):
        update["expiresAt"] = now + timedelta(days=policy.cleanup_days)
    return update


def complete(item_ids: Iterable, owner: str, policy: QueuePolicy) -> int:
    """Mark items held by ``owner`` completed; items no longer ours are left alone."""
    ids = [_oid(i) for i in item_ids]
    if not ids:
        return 0
    now = utcnow()
    update = {"$set": _finish_update("completed", policy, now), "$unset": {"lockedBy": "", "lockedAt": ""}}
    return sum(commands.write_chunks(ids, lambda chunk: _coll().update_many(
        {"_id": {"$in": chunk}, "status": "processing", "lockedBy": owner}, update).modified_count))


def skip(item_id, owner: str, reason: str, policy: QueuePolicy) -> bool:
    """End an item whose job is gone or closed: skipped, not failed."""
    now = utcnow()
    update = _finish_update("skipped", policy, now)
    update["lastError"] = reason
    result = _coll().update_one({"_id": _oid(item_id), "status": "processing", "lockedBy": owner},
                                {"$set": update, "$unset": {"lockedBy": "", "lockedAt": ""}})
    return result.modified_count == 1


def fail(item: dict, owner: str, error: str, policy: QueuePolicy, retryable: bool = True) -> str:
    """Record a failed attempt: back to pending after the retry delay, or failed for good. Returns the new status."""
    now = utcnow()
    attempts = int(item.get("attempts", 1))
    final = (not retryable) or attempts >= policy.max_attempts
    entry = {"at": now, "attempt": attempts, "error": error[:2000], "owner": owner}
    update: dict = {"$set": {"lastError": error[:2000], "updatedAt": now},
                    "$unset": {"lockedBy": "", "lockedAt": ""},
                    "$push": {"errorHistory": {"$each": [entry], "$slice": -ERROR_HISTORY_KEEP}}}
    if final:
        update["$set"].update(_finish_update("failed", policy, now))
        new_status = "failed"
    else:
        update["$set"].update({"status": "pending", "nextAttemptAt": now + policy.retry_delay(attempts)})
        new_status = "pending"
    try:
        result = _coll().update_one({"_id": item["_id"], "status": "processing", "lockedBy": owner}, update)
    except DuplicateKeyError:
        # A newer pending item for the same job exists (its text changed meanwhile): this one is obsolete.
        result = _coll().update_one({"_id": item["_id"], "status": "processing", "lockedBy": owner},
                                    {"$set": _finish_update("skipped", policy, now) | {"lastError": error[:2000]},
                                     "$unset": {"lockedBy": "", "lockedAt": ""}})
        return "skipped" if result.modified_count else "lost"
    if result.modified_count != 1:
        return "lost"
    if policy.debug:
        log.debug("item %s attempt %s failed (%s): %s", item["_id"], attempts, new_status, error)
    return new_status


def release(item_ids: Iterable, owner: str, delay: timedelta = timedelta(0), refund_attempt: bool = True) -> int:
    """Give items back to pending (shutdown, rate limit, configuration error) without spending an attempt."""
    ids = [_oid(i) for i in item_ids]
    if not ids:
        return 0
    now = utcnow()
    released = 0
    for item_id in ids:
        update = {"$set": {"status": "pending", "nextAttemptAt": now + delay, "updatedAt": now},
                  "$unset": {"lockedBy": "", "lockedAt": ""}}
        if refund_attempt:
            update["$inc"] = {"attempts": -1}
        try:
            result = _coll().update_one({"_id": item_id, "status": "processing", "lockedBy": owner}, update)
            released += result.modified_count
        except DuplicateKeyError:
            # A newer pending item for the same job exists: drop this obsolete one.
            released += _coll().delete_one({"_id": item_id, "status": "processing", "lockedBy": owner}).deleted_count
    return released


def discard(item_id, who: str, policy: QueuePolicy) -> str | None:
    """Take a pending or failed item out of the queue (an admin's decision): skipped, marked discarded.

    Returns the status it had, or None when it was neither pending nor failed (or changed meanwhile).
    """
    item = _coll().find_one({"_id": _oid(item_id)}, {"status": 1})
    if item is None or item["status"] not in ("pending", "failed"):
        return None
    now = utcnow()
    update = _finish_update("skipped", policy, now)
    update["lastError"] = f"discarded by {who}"
    result = _coll().update_one({"_id": item["_id"], "status": item["status"]},
                                {"$set": update, "$unset": {"lockedBy": "", "lockedAt": ""}})
    return item["status"] if result.modified_count else None


def recover_stuck(timeout: timedelta, live_owners: Iterable[str] = ()) -> int:
    """Return items held longer than ``timeout`` by a worker that died to pending; how many.

    Items of ``live_owners`` (workers still sending heartbeats) are theirs to finish: taking them would
    embed them twice. Only when held past three times ``timeout`` (a worker that beats but is hung) are
    they taken too.
    """
    now = utcnow()
    live = set(live_owners)
    recovered = 0
    # One query on the (status, lockedAt) index; who holds an item is decided here, not by an $or.
    for doc in _coll().find({"status": "processing", "lockedAt": {"$lt": now - timeout}},
                            {"_id": 1, "lockedBy": 1, "lockedAt": 1}):
        if doc.get("lockedBy") in live and doc["lockedAt"] >= now - timeout * HUNG_FACTOR:
            continue
        recovered += release([doc["_id"]], doc.get("lockedBy") or "", refund_attempt=False)
    if recovered:
        log.warning("recovered %d stuck queue items", recovered)
    return recovered


def release_worker(owner: str, refund_attempt: bool = False) -> int:
    """Give back every item a worker holds; how many.

    A worker stopping cleanly refunds the attempt; a dead worker's items keep it spent (the item may be
    what killed it, and QUEUE_MAX_ATTEMPTS must end such a loop).
    """
    ids = [d["_id"] for d in _coll().find({"status": "processing", "lockedBy": owner}, {"_id": 1})]
    return release(ids, owner, refund_attempt=refund_attempt)


def remove_for_jobs(job_ids: Iterable, statuses: tuple[str, ...] = ("pending",)) -> int:
    """Take jobs' items of ``statuses`` out of the queue in one write: pending ones of a closed job, pending and failed
    ones of a deleted job (held ones settle as skipped; history expires)."""
    ids = [_oid(i) for i in job_ids]
    return sum(commands.write_chunks(ids, lambda chunk: _coll().delete_many(
        {"jobId": {"$in": list(chunk)}, "status": {"$in": list(statuses)}}).deleted_count))


def open_jobs(job_ids: Iterable) -> set:
    """Which of these jobs have an item pending or being processed."""
    ids = [_oid(i) for i in job_ids]
    return {d["jobId"] for chunk in commands.chunks(ids) for d in _coll().find(
        {"jobId": {"$in": list(chunk)}, "status": {"$in": ["pending", "processing"]}}, {"jobId": 1})}


def retry_failed(query: dict | None = None) -> int:
    """Failed items back to pending with fresh attempts; how many.

    A failed item whose job already has a pending item is settled by that one and is deleted instead.
    """
    now = utcnow()
    match = {"status": "failed", **(query or {})}
    failed = list(_coll().find(match, {"_id": 1, "jobId": 1, "taskType": 1}))
    if not failed:
        return 0
    pending = {(d["jobId"], d["taskType"]) for d in _coll().find(
        {"status": "pending", "jobId": {"$in": list({d["jobId"] for d in failed})}}, {"jobId": 1, "taskType": 1})}
    settled, retry, seen = [], [], set(pending)
    for doc in failed:
        key = (doc["jobId"], doc.get("taskType"))
        (settled if key in seen else retry).append(doc["_id"])
        seen.add(key)   # two failed items of one job: only the first goes back
    count = _coll().delete_many({"_id": {"$in": settled}, "status": "failed"}).deleted_count if settled else 0
    try:
        count += _coll().update_many(
            {"_id": {"$in": retry}, "status": "failed"},
            {"$set": {"status": "pending", "attempts": 0, "nextAttemptAt": now, "updatedAt": now},
             "$unset": {"finishedAt": "", "expiresAt": ""}}).modified_count
    except DuplicateKeyError:
        # A pending item appeared meanwhile for one of these jobs: fall back to one at a time.
        for item_id in retry:
            try:
                count += _coll().update_one(
                    {"_id": item_id, "status": "failed"},
                    {"$set": {"status": "pending", "attempts": 0, "nextAttemptAt": now, "updatedAt": now},
                     "$unset": {"finishedAt": "", "expiresAt": ""}}).modified_count
            except DuplicateKeyError:
                count += _coll().delete_one({"_id": item_id, "status": "failed"}).deleted_count
    return count


def clear_old(days: int) -> int:
    """Delete finished items older than ``days`` days; how many."""
    cutoff = utcnow() - timedelta(days=days)
    return _coll().delete_many({"status": {"$in": list(FINISHED_STATUSES)},
                                "finishedAt": {"$lt": cutoff}}).deleted_count


def counts() -> dict[str, int]:
    """Items per status, every status present."""
    result = {status: 0 for status in QUEUE_STATUSES}
    for status in QUEUE_STATUSES:
        result[status] = _coll().count_documents({"status": status})
    return result
