"""What the board's frontend gets for "similar jobs": the precomputed list, or a fallback.

The list is served as stored (jobs fetched in one query, closed ones left
out). A job without a list yet, or whose text changed since its list was
computed, gets active jobs of the same category, then the same location,
newest first, marked ``cached: false``.
"""
from __future__ import annotations

from typing import Any

from . import rollback
from .job_store import get_job, job_json
from .models import Job
from .timeutil import iso

LIST_FIELDS = ("title", "company", "location", "category", "status", "employmentType", "salaryRange",
               "language", "createdAt", "updatedAt")


def _summaries(query: dict, limit: int | None = None, order=None) -> list[Job]:
    found = Job.objects(__raw__=query).only(*LIST_FIELDS)
    if order:
        found = found.order_by(*order)
    if limit:
        found = found.limit(limit)
    return list(found)


def similar_jobs(job_id: str, limit: int, active_only: bool = False) -> dict[str, Any]:
    """The seed's response: {similarJobs: [{job, score}], count, cached, computedAt}; JobNotFound as get_job."""
    job = get_job(job_id, active_only=active_only)
    entries = [] if rollback.level() else (job.similarJobs or [])
    computed = (job.similarityMetadata or {}).get("computedAt")
    if entries and computed:
        wanted = [e.jobId for e in entries]
        found = {j.id: j for j in _summaries({"_id": {"$in": wanted}, "status": "active"})}
        items = [{"job": job_json(found[e.jobId], detail=False), "score": round(e.score, 4)}
                 for e in entries if e.jobId in found][:limit]
        if items:
            return {"similarJobs": items, "count": len(items), "cached": True, "computedAt": iso(computed)}
    items = [{"job": job_json(j, detail=False), "score": None} for j in fallback_jobs(job, limit)]
    return {"similarJobs": items, "count": len(items), "cached": False, "computedAt": None}


def fallback_jobs(job: Job, limit: int) -> list[Job]:
    """Active jobs of the same category, then of the same location, newest first; never the job itself."""
    chosen: list[Job] = []
    seen = {job.id}
    for field in ("category", "location"):
        value = getattr(job, field, None)
        if not value or len(chosen) >= limit:
            continue
        query = {field: value, "status": "active", "_id": {"$nin": list(seen)}}
        for other in _summaries(query, limit - len(chosen), order=("-createdAt",)):
            chosen.append(other)
            seen.add(other.id)
    return chosen
