"""Finding a job for the dashboard (title prefix through the index, then a bounded substring scan), and its detail."""
from __future__ import annotations

import re

from pymongo.errors import ExecutionTimeout

from jobflow.capture.decide import misfit_reason
from jobflow.embeddings import provider_model
from jobflow.embeddings.language import normalise, stored_language
from jobflow.embeddings.text import job_text, text_hash
from jobflow.models import Job, QueueItem
from jobflow.models.job import fitted
from jobflow.ops.queue_view import _title_prefix, parse_oid, with_titles

JOB_LIST_FIELDS = {"title": 1, "company": 1, "status": 1, "createdAt": 1, "embedding.status": 1,
                   "embedding.model": 1, "embedding.tokens": 1, "similarJobs": {"$slice": 0}}


SUBSTRING_SEARCH_MS = 1500   # a title's middle cannot use the index: bound the scan


def search_jobs(q: str, limit: int = 20) -> list[dict]:
    """Jobs by id, external id, title prefix (indexed), then words anywhere in the title (bounded scan)."""
    q = (q or "").strip()[:200]
    if not q:
        return []
    oid = parse_oid(q)
    if oid is not None:
        return list(Job._get_collection().find({"_id": oid}, JOB_LIST_FIELDS))
    found = {d["_id"]: d for d in Job._get_collection().find({"externalId": q}, JOB_LIST_FIELDS).limit(limit)}
    for doc in _title_prefix(q, JOB_LIST_FIELDS, limit):
        found.setdefault(doc["_id"], doc)
    if len(found) < limit:
        # "Nurse" should find "Registered Nurse": a scan of titles, stopped at the page size or the time limit.
        pattern = {"title": {"$regex": re.escape(q), "$options": "i"}, "_id": {"$nin": list(found)}}
        try:
            scan = Job._get_collection().find(pattern, JOB_LIST_FIELDS).limit(limit - len(found))
            for doc in scan.max_time_ms(SUBSTRING_SEARCH_MS):
                found.setdefault(doc["_id"], doc)
        except ExecutionTimeout:
            pass
    return list(found.values())[:limit]


def _language(doc: dict) -> dict:
    """{language, languageDetected}: the language the similarity correction counts the job in, and whether it was
    detected from the text (no ``language`` field) rather than given; None before the job is embedded."""
    given = normalise(doc.get("language"))
    if not given and not (doc.get("embedding") or {}).get("language"):
        return {"language": None, "languageDetected": False}
    return {"language": stored_language(doc), "languageDetected": not given}


def job_detail(job_id: str, settings: dict) -> dict | None:
    """A job's embedding status, whether it is current, its similar jobs with titles, and its queue items."""
    oid = parse_oid(job_id)
    job = Job._get_collection().find_one({"_id": oid}, {"embedding.vector": 0}) if oid else None
    if job is None:
        return None
    problem = misfit_reason(job)
    job = fitted(job)       # another application may have written anything: show what fits
    embedding = job.get("embedding") or {}
    model = provider_model(settings)
    similar = job.get("similarJobs") or []
    titles = {d["_id"]: d for d in Job._get_collection().find(
        {"_id": {"$in": [s.get("jobId") for s in similar]}},
        {"title": 1, "company": 1, "status": 1, "language": 1, "embedding.language": 1})} if similar else {}
    titles = {key: fitted(doc) for key, doc in titles.items()}
    items = with_titles(list(QueueItem._get_collection().find({"jobId": oid}).sort("_id", -1).limit(10)))
    return {
        "job": job,
        "problem": problem,
        "embedding": embedding,
        "current": embedding.get("status") == "completed" and embedding.get("model") == model,
        "textChanged": bool(embedding.get("textHash")) and embedding.get("textHash") != text_hash(job_text(job)),
        "model": model,
        "jobLanguage": _language(job),
        "similar": [{"jobId": s.get("jobId"), "score": s.get("score"),
                     "title": (titles.get(s.get("jobId")) or {}).get("title"),
                     "company": (titles.get(s.get("jobId")) or {}).get("company"),
                     **(_language(titles[s["jobId"]]) if s.get("jobId") in titles else {})} for s in similar],
        "queueItems": items,
    }
