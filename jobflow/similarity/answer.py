"""What the board's frontend gets for "similar jobs": the precomputed list, or a fallback.

The list is served as stored (jobs fetched in one query, closed ones left
out). A job without a list yet, or whose text changed since its list was
computed, gets active jobs of the same category, then the same location,
newest first, marked ``cached: false``. Each entry names the job's language
(its ``language`` field, else the one detected when it was embedded); a
``language`` filter keeps the entries in that language.
"""
from __future__ import annotations

from typing import Any

from jobflow.embeddings.language import stored_language
from jobflow.jobs import rollback
from jobflow.jobs.store import get_job, job_json
from jobflow.models import Job
from jobflow.timeutil import iso

LIST_FIELDS = ("title", "company", "location", "category", "status", "employmentType", "salaryRange",
               "language", "embedding.language", "createdAt", "updatedAt")
FALLBACK_POOL = 100    # newest candidates read per field when the fallback is filtered by language


def _summaries(query: dict, limit: int | None = None, order=None) -> list[Job]:
    found = Job.objects(__raw__=query).only(*LIST_FIELDS)
    if order:
        found = found.order_by(*order)
    if limit:
        found = found.limit(limit)
    return list(found)


def _entry(job: Job, score) -> dict[str, Any]:
    return {"job": job_json(job, detail=False), "score": score, "language": stored_language(job)}


def similar_jobs(job_id: str, limit: int, active_only: bool = False, language: str | None = None) -> dict[str, Any]:
    """The seed's response: {similarJobs: [{job, score, language}], count, cached, computedAt}; JobNotFound as
    get_job. ``language``: only jobs in that language (a normalised code)."""
    job = get_job(job_id, active_only=active_only)
    entries = [] if rollback.level() else (job.similarJobs or [])
    computed = (job.similarityMetadata or {}).get("computedAt")
    keep = (lambda j: stored_language(j) == language) if language else None
    if entries and computed:
        wanted = [e.jobId for e in entries]
        found = {j.id: j for j in _summaries({"_id": {"$in": wanted}, "status": "active"})
                 if keep is None or keep(j)}
        items = [_entry(found[e.jobId], round(e.score, 4)) for e in entries if e.jobId in found][:limit]
        if items or language:
            return {"similarJobs": items, "count": len(items), "cached": True, "computedAt": iso(computed)}
    items = [_entry(j, None) for j in fallback_jobs(job, limit, keep)]
    return {"similarJobs": items, "count": len(items), "cached": False, "computedAt": None}


def fallback_jobs(job: Job, limit: int, keep=None) -> list[Job]:
    """Active jobs of the same category, then of the same location, newest first; never the job itself.

    ``keep``: a test each job must pass (the language filter); the newest FALLBACK_POOL of each field are read.
    """
    chosen: list[Job] = []
    seen = {job.id}
    for field in ("category", "location"):
        value = getattr(job, field, None)
        if not value or len(chosen) >= limit:
            continue
        query = {field: value, "status": "active", "_id": {"$nin": list(seen)}}
        for other in _summaries(query, FALLBACK_POOL if keep else limit - len(chosen), order=("-createdAt",)):
            if len(chosen) >= limit:
                break
            if keep is None or keep(other):
                chosen.append(other)
            seen.add(other.id)
    return chosen
