"""Queue embeddings for existing jobs: the seed's migration, counted first and safe to repeat."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Callable

from jobflow.capture.decide import DECISION_FIELDS, misfit_reason
from jobflow.embeddings import text
from jobflow.embeddings.text import job_text, text_hash
from jobflow.jobs import queue
from jobflow.models import Job, QueueItem

CHUNK = 1000


@dataclass
class MigrationPlan:
    """What a migration finds and would do."""
    model: str
    total: int = 0
    active: int = 0
    current: int = 0
    other_model: int = 0
    older_recipe: int = 0     # this model, made by an earlier recipe (embeddings.text.RECIPE)
    text_changed: int = 0
    never_embedded: int = 0
    failed: int = 0
    cannot_be_used: int = 0   # documents another application wrote in a shape the product cannot use
    already_queued: int = 0
    to_queue: list = field(default_factory=list)

    @property
    def needing(self) -> int:
        """Active jobs without a current embedding."""
        return self.active - self.current - self.cannot_be_used


def plan(model: str) -> MigrationPlan:
    """Count every job and decide which need an embedding of ``model`` (changes nothing)."""
    result = MigrationPlan(model=model)
    result.total = Job.objects.count()
    pending = {d["jobId"] for d in QueueItem._get_collection().find(
        {"status": {"$in": ["pending", "processing"]}, "taskType": queue.GENERATE_EMBEDDING}, {"jobId": 1})}
    for doc in Job._get_collection().find({"status": "active"}, DECISION_FIELDS, batch_size=CHUNK):
        result.active += 1
        if misfit_reason(doc):
            result.cannot_be_used += 1
            continue
        emb = doc.get("embedding") or {}
        same_text = emb.get("textHash") == text_hash(job_text(doc))
        if emb.get("status") == "completed" and emb.get("model") == model and same_text \
                and text.recipe_of(emb) == text.RECIPE:
            result.current += 1
            continue
        if emb.get("status") == "completed" and emb.get("model") != model:
            result.other_model += 1
        elif emb.get("status") == "completed" and same_text:
            result.older_recipe += 1
        elif emb.get("status") == "completed":
            result.text_changed += 1
        elif emb.get("status") == "failed":
            result.failed += 1
        else:
            result.never_embedded += 1
        if doc["_id"] in pending:
            result.already_queued += 1
        else:
            result.to_queue.append(doc["_id"])
    return result


def run(found: MigrationPlan, progress: Callable[[int], None] = lambda n: None) -> tuple[str, int]:
    """Queue the planned jobs below live edits (back-fill priority); return (migration id, how many queued)."""
    migration_id = uuid.uuid4().hex[:12]
    queued = 0
    for start in range(0, len(found.to_queue), CHUNK):
        chunk = found.to_queue[start:start + CHUNK]
        queued += queue.enqueue_many(chunk, priority=queue.PRIORITY_BACKFILL, source="migration",
                                     migration_id=migration_id)
        progress(len(chunk))
    return migration_id, queued
