"""Job postings: validation, create, update, close and delete, with the queue kept in step.

Creating a job, or changing the text its embedding is made from, queues one
``generate_embedding`` task; other changes queue nothing. Closing or deleting
a job takes it out of the queue at once; each worker's index sync then takes it
out of every similar-jobs list.
"""
from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from jobflow.embeddings.text import job_text, text_hash
from jobflow.jobs import queue
from jobflow.models import Job, JobDeletion
from jobflow.models.job import JOB_STATUSES
from jobflow.timeutil import iso, utcnow

FIELD_LIMITS = {
    "title": 300,
    "description": 50000,
    "company": 200,
    "location": 200,
    "category": 100,
    "employmentType": 50,
    "salaryRange": 100,
    "language": 20,
    "externalId": 200,
}
REQUIRED_FIELDS = ("title", "description")
WRITABLE_FIELDS = tuple(FIELD_LIMITS) + ("status",)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class ValidationError(ValueError):
    """Input that cannot be stored; ``fields`` maps each bad field to why."""

    def __init__(self, fields: dict[str, str]):
        super().__init__("invalid job: " + "; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


class JobNotFound(LookupError):
    """No job has that id."""


def parse_id(value: str) -> ObjectId:
    """An ObjectId from a path segment; JobNotFound when malformed."""
    try:
        return ObjectId(str(value))
    except (InvalidId, TypeError):
        raise JobNotFound(value) from None


def validate(data: Any, partial: bool = False) -> dict[str, Any]:
    """Clean job fields from a JSON body; raise ValidationError naming every bad field."""
    if not isinstance(data, dict):
        raise ValidationError({"body": "expected a JSON object"})
    errors: dict[str, str] = {}
    clean: dict[str, Any] = {}
    for name in data:
        if name not in WRITABLE_FIELDS:
            errors[name] = "unknown field; allowed: " + ", ".join(WRITABLE_FIELDS)
    for name in WRITABLE_FIELDS:
        if name not in data:
            if not partial and name in REQUIRED_FIELDS:
                errors[name] = "required"
            continue
        value = data[name]
        if value is None and name not in REQUIRED_FIELDS and name != "status":
            clean[name] = None
            continue
        if not isinstance(value, str):
            errors[name] = "expected a string"
            continue
        value = _CONTROL.sub("", value).strip()
        if not _is_utf8(value):
            errors[name] = "not valid Unicode text (unpaired surrogate)"
            continue
        if name == "status":
            if value not in JOB_STATUSES:
                errors[name] = "expected one of " + ", ".join(JOB_STATUSES)
                continue
        elif len(value) > FIELD_LIMITS[name]:
            errors[name] = f"longer than {FIELD_LIMITS[name]} characters"
            continue
        if name in REQUIRED_FIELDS and not value:
            errors[name] = "must not be empty"
            continue
        clean[name] = value
    if errors:
        raise ValidationError(errors)
    return clean


def _is_utf8(value: str) -> bool:
    """False for text that cannot be stored (JSON allows unpaired surrogates such as "\\ud800"; BSON does not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def get_job(job_id, active_only: bool = False) -> Job:
    """The job with that id; JobNotFound otherwise (also when ``active_only`` and it is not active)."""
    job = Job.objects(id=parse_id(job_id)).first()
    if job is None or (active_only and job.status != "active"):
        raise JobNotFound(str(job_id))
    return job


def create_job(fields: dict[str, Any], source: str = "api") -> Job:
    """Store a new job and queue its embedding when it is active."""
    now = utcnow()
    job = Job(**fields)
    job.status = fields.get("status") or "active"
    job.createdAt = job.updatedAt = now
    job.save()
    if job.status == "active":
        # Idle: change capture may have queued it already, and a worker may hold that item.
        queue.enqueue_idle([job.id], priority=queue.PRIORITY_LIVE, source=source)
    return job


def update_job(job_id, fields: dict[str, Any], replace: bool = False) -> Job:
    """Change a job (PATCH, or PUT with ``replace``); queue re-embedding only when its text changed."""
    job = get_job(job_id)
    before_text = text_hash(job_text(job))
    before_status = job.status
    if replace:
        for name in WRITABLE_FIELDS:
            if name not in fields and name != "status":
                setattr(job, name, None)
    for name, value in fields.items():
        setattr(job, name, value)
    if not job.status:
        job.status = "active"
    job.updatedAt = utcnow()
    text_changed = text_hash(job_text(job)) != before_text
    if text_changed:
        # The old list described the old text: stop serving it until the new one is computed.
        job.similarJobs = []
        job.similarityMetadata = {}
        if job.embedding is not None:
            job.embedding.status = "pending"
    job.save()
    if job.status != "active":
        if before_status == "active":
            # The answers leave it out at once (they serve active jobs only); each worker's index sync takes it
            # out of its index and rewrites the lists that held it within seconds.
            queue.remove_for_jobs([job.id])
    elif text_changed or before_status != "active":
        queue.enqueue(job.id, priority=queue.PRIORITY_LIVE, source="api")
    return job


def delete_job(job_id) -> None:
    """Delete a job and its pending and failed queue items; the workers take it out of the lists that held it."""
    job = get_job(job_id)
    queue.remove_for_jobs([job.id], ("pending", "failed"))
    job.delete()
    record_deletion(job.id)


def record_deletion(job_id, days: int = 1) -> None:
    """Note a deletion for the workers' index sync (kept ``days``: a worker that was down reconciles instead)."""
    now = utcnow()
    JobDeletion._get_collection().update_one(
        {"_id": job_id}, {"$set": {"at": now, "expiresAt": now + timedelta(days=days)}}, upsert=True)


def list_jobs(status: str | None = None, category: str | None = None, q: str | None = None,
              limit: int = 20, after: str | None = None) -> tuple[list[Job], int, str | None]:
    """Jobs newest first, filtered; keyset pagination by id. Returns (jobs, total matching, next cursor)."""
    query: dict[str, Any] = {}
    if status:
        query["status"] = status
    if category:
        query["category"] = category
    if q:
        pattern = re.escape(q.strip())
        query["$or"] = [{"title": {"$regex": pattern, "$options": "i"}},
                        {"company": {"$regex": pattern, "$options": "i"}}]
    total = Job.objects(__raw__=query).count()
    if after:
        query["_id"] = {"$lt": parse_id(after)}
    jobs = list(Job.objects(__raw__=query).exclude("embedding.vector").order_by("-id").limit(limit + 1))
    next_cursor = str(jobs[limit - 1].id) if len(jobs) > limit else None
    return jobs[:limit], total, next_cursor


def job_json(job: Job, detail: bool = True, private: bool = False) -> dict[str, Any]:
    """The JSON of a job (never the vector); the embedding's error only when ``private`` (token holders)."""
    out: dict[str, Any] = {"id": str(job.id)}
    for name in Job.PUBLIC_FIELDS:
        value = getattr(job, name, None)
        if value is not None:
            out[name] = value
    out["createdAt"] = iso(job.createdAt)
    out["updatedAt"] = iso(job.updatedAt)
    if detail:
        emb = job.embedding
        out["embedding"] = None if emb is None else {
            "status": emb.status, "model": emb.model, "dimensions": emb.dimensions,
            "tokens": emb.tokens, "generatedAt": iso(emb.generatedAt)}
        if emb is not None and private:
            out["embedding"]["error"] = emb.error
        out["similarJobsCount"] = len(job.similarJobs or [])
    return out
