"""What a job document calls for, decided from the document alone (no database)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bson import ObjectId

from jobflow.embeddings.text import TEXT_FIELDS, job_text, text_hash

# The fields whose change can call for something: the embedded text, the status and the language.
WATCHED_FIELDS = TEXT_FIELDS + ("status", "language")
# What the product itself writes into a job: a change to these alone is the product's echo.
OWN_FIELDS = ("embedding", "similarJobs", "similarityMetadata")
STRING_FIELDS = WATCHED_FIELDS + ("employmentType", "salaryRange", "externalId")
DATE_FIELDS = ("createdAt", "updatedAt")
# What is read of a job to decide: all but the vector and the lists (a projection of ``embedding.status`` would hide
# an ``embedding`` that is not a document at all).
DECISION_FIELDS = {"embedding.vector": 0, "similarJobs": {"$slice": 1}, "similarityMetadata": 0}


@dataclass(frozen=True)
class Decision:
    """``embed``: queue it; ``leave``: out of the queue and every list; ``misfit``: not usable (``reason``);
    ``none``: nothing to do."""
    action: str
    reason: str = ""
    digest: str = ""


def misfit_reason(doc: dict) -> str | None:
    """Why the product cannot use this job document, or None when it fits."""
    if not isinstance(doc.get("_id"), ObjectId):
        return f"_id is a {type(doc.get('_id')).__name__}, not an ObjectId"
    for name in STRING_FIELDS:
        value = doc.get(name)
        if value is not None and not isinstance(value, str):
            return f"{name} is a {type(value).__name__}, not text"
    if not (doc.get("title") or "").strip():
        return "title is missing"
    for name in DATE_FIELDS:
        value = doc.get(name)
        if value is not None and not isinstance(value, datetime):
            return f"{name} is not a date"
    embedding = doc.get("embedding")
    if embedding is not None and not isinstance(embedding, dict):
        return "embedding is not a document"
    similar = doc.get("similarJobs")
    if similar is not None and not isinstance(similar, list):
        return "similarJobs is not a list"
    return None


def decide(doc: dict | None, open_item: bool, text_touched: bool) -> Decision:
    """What a job calls for. ``doc`` None: deleted. ``open_item``: a queue item for it is pending or being
    processed. ``text_touched``: the write changed a field of the text (then a new item is needed even while one
    is being processed: it holds the old text)."""
    if doc is None:
        return Decision("leave", "deleted")
    reason = misfit_reason(doc)
    if reason:
        return Decision("misfit", reason)
    if doc.get("status", "active") != "active":
        return Decision("leave", f"status {doc.get('status')}")
    digest = text_hash(job_text(doc))
    embedding = doc.get("embedding") or {}
    if embedding.get("textHash") == digest:
        # Embedded (or failed for good) from this very text; another model's vectors are the migration's work.
        return Decision("none", "text unchanged", digest)
    if open_item and not text_touched:
        return Decision("none", "already queued", digest)
    return Decision("embed", "text changed" if embedding else "new job", digest)
