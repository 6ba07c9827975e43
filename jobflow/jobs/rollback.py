"""Rollback of the embedding system, in the three levels of the original runbook.

Level 1 disables the worker everywhere (workers stop claiming; the API serves
the fallback); nothing is deleted. Level 2 is level 1 plus deploying the
previous release (instructions only: the code is yours to revert). Level 3
removes embedding data from jobs and drops the queue and worker collections.
The switch lives in the database so every process, on every host, obeys it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from jobflow.db import get_db
from jobflow.timeutil import utcnow

SWITCH_ID = "rollback"
COLLECTION = "jobflowswitches"
_CACHE_SECONDS = 5.0
_cache: dict[str, tuple[float, int]] = {}   # database name -> (read at, level)


def _coll():
    return get_db()[COLLECTION]


def level(fresh: bool = False) -> int:
    """The rollback level in force (0 = none); read at most every few seconds per process."""
    now = time.monotonic()
    name = get_db().name
    read_at, value = _cache.get(name, (0.0, 0))
    if fresh or now - read_at > _CACHE_SECONDS:
        doc = _coll().find_one({"_id": SWITCH_ID}) or {}
        value = int(doc.get("level", 0))
        _cache[name] = (now, value)
    return value


def set_level(value: int, by: str = "cli") -> None:
    """Put a level in force (0 re-enables everything)."""
    _coll().update_one({"_id": SWITCH_ID}, {"$set": {"level": value, "at": utcnow(), "by": by}}, upsert=True)
    _cache[get_db().name] = (time.monotonic(), value)


@dataclass
class DataCounts:
    """What level 3 would remove."""
    jobs_with_embedding: int
    jobs_with_lists: int
    queue_items: int
    worker_statuses: int


def counts() -> DataCounts:
    """Counts of the embedding data (dry run of level 3)."""
    db = get_db()
    return DataCounts(
        jobs_with_embedding=db.jobs.count_documents({"embedding": {"$exists": True}}),
        jobs_with_lists=db.jobs.count_documents({"$or": [{"similarJobs.0": {"$exists": True}},
                                                         {"similarityMetadata": {"$exists": True}}]}),
        queue_items=db.jobqueues.estimated_document_count(),
        worker_statuses=db.workerstatuses.estimated_document_count())


def remove_embedding_data() -> DataCounts:
    """Level 3: unset embedding, similarJobs and similarityMetadata on every job; drop queue and worker collections."""
    before = counts()
    db = get_db()
    db.jobs.update_many({}, {"$unset": {"embedding": "", "similarJobs": "", "similarityMetadata": ""}})
    db.jobqueues.drop()
    db.workerstatuses.drop()
    return before
