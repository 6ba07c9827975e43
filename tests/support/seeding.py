"""What tests start from: jobs (in the database or in a posting file), queue items, bilingual postings."""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from bson import ObjectId

from jobflow.jobs import queue
from jobflow.models import Job, QueueItem
from jobflow.timeutil import utcnow

ROLES = [("Registered Nurse", "Healthcare"), ("Python Developer", "Software Development"),
         ("Accountant", "Finance"), ("Truck Driver", "Logistics"), ("Chef", "Hospitality & Tourism"),
         ("Sales Agent", "Sales"), ("Primary Teacher", "Education"), ("Electrician", "Construction"),
         ("Data Analyst", "Software Development"), ("Hotel Receptionist", "Hospitality & Tourism")]
CITIES = ["Tirana", "Durres", "Vlore", "Shkoder", "Korce", "Elbasan", "Fier"]


def posting(i: int, tag: str = "") -> dict:
    """The ``i``-th of a series of distinct active postings (role, city and numbers vary)."""
    role, category = ROLES[i % len(ROLES)]
    city = CITIES[(i // len(ROLES)) % len(CITIES)]
    return {"title": f"{role} {tag}{i}", "category": category, "company": f"Company {i % 29}", "location": city,
            "status": "active", "description": f"{role} in {city}: shift pattern {i % 5}, team {i % 11}, "
                                              f"contract {tag}{i}."}


def add_jobs(jobs: int | list[dict], tag: str = "") -> list:
    """Insert jobs and queue them in one bulk write each; their ids in order.

    ``jobs`` is a count (that many distinct postings) or the documents (active unless they say otherwise).
    """
    now = utcnow()
    docs = [posting(i, tag) for i in range(jobs)] if isinstance(jobs, int) else jobs
    ids = Job._get_collection().insert_many([{"status": "active", "createdAt": now, "updatedAt": now, **doc}
                                             for doc in docs]).inserted_ids
    # As the API does: change capture may have queued some first, and a worker may hold those items already.
    queue.enqueue_idle(ids, priority=queue.PRIORITY_LIVE, source="api")
    return ids


def write_jobs(path: Path, count: int, tag: str, words: int = 0, status: str = "active") -> Path:
    """A JSON-lines file of ``count`` distinct postings (``words`` extra words make a long description)."""
    with open(path, "w") as handle:
        for i in range(count):
            role, category = ROLES[i % len(ROLES)]
            city = CITIES[(i // len(ROLES)) % len(CITIES)]
            extra = " ".join(f"detail{n}" for n in range(words))
            handle.write(json.dumps({
                "id": f"{tag}-{i}", "title": f"{role} {tag} {i}", "company": f"Company {i % 13}",
                "category": category, "location": city, "status": status,
                "description": f"{role} in {city}, team {i % 7}, posting {tag} {i}. {extra}".strip()}) + "\n")
    return path


def add_item(job_id=None, status="pending", error=None, created=None, **extra):
    """Insert one queue item; a failed one has used its three attempts, and ``error`` fills its history.

    ``time_id=True`` makes its ``_id`` carry ``created``; ``finished`` sets when a finished item ended.
    """
    created = created or utcnow()
    doc = {"_id": ObjectId.from_datetime(created) if extra.pop("time_id", False) else ObjectId(),
           "jobId": job_id or ObjectId(), "taskType": "generate_embedding", "status": status, "priority": 10,
           "attempts": 3 if status == "failed" else 0, "nextAttemptAt": created, "createdAt": created,
           "updatedAt": created, "metadata": {"source": "api"}, "errorHistory": []}
    if status in ("failed", "completed", "skipped"):
        doc["finishedAt"] = extra.pop("finished", created)
    if error:
        doc["lastError"] = error
        doc["errorHistory"] = [{"at": created, "attempt": n, "error": f"{error} (attempt {n})", "owner": "w1"}
                               for n in (1, 2, 3)]
    doc.update(extra)
    return QueueItem._get_collection().insert_one(doc).inserted_id


def add_items(n: int, status: str = "pending", error: str | None = None) -> list:
    """``n`` queue items of ``status`` (each for a job of its own); their ids."""
    return [add_item(status=status, error=error) for _ in range(n)]


def add_failed(title="Backend Developer", error="provider error 500: upstream timeout after 30000 ms"):
    """An active job whose queue item failed three times with ``error``; the item's id."""
    job_id = Job._get_collection().insert_one({"title": title, "company": "Adriatic Soft", "status": "active",
                                               "createdAt": utcnow()}).inserted_id
    return add_item(job_id, "failed", error, created=utcnow() - timedelta(minutes=3), finished=utcnow())


# ----- the same roles in English and Albanian --------------------------------------------------------------------
BILINGUAL_ROLES = [("Python developer", "Zhvillues Python", "python django postgresql"),
                   ("Nurse", "Infermier", "hospital patients wards"),
                   ("Accountant", "Kontabilist", "invoices ledger vat"),
                   ("Truck driver", "Shofer kamioni", "truck licence routes"),
                   ("Chef", "Kuzhinier", "kitchen menu restaurant"),
                   ("Electrician", "Elektricist", "wiring circuits voltage"),
                   ("Teacher", "Mësues", "classroom pupils curriculum"),
                   ("Sales agent", "Agjent shitjesh", "sales clients targets")]
EN = ("We are looking for a {role} to join our growing team in the city. You will work with {words} every day, "
      "help your colleagues and report to the team lead. We offer a good salary and training.")
SQ = ("Kërkojmë një {role} për t'u bashkuar me ekipin tonë në rritje në qytet. Do të punoni me {words} çdo ditë, "
      "do të ndihmoni kolegët dhe do t'i raportoni drejtuesit të ekipit. Ofrojmë pagë të mirë dhe trajnime.")


def bilingual_postings() -> list[dict]:
    """Three variants of each role, in English then Albanian: posting ``n`` is role ``n // 2 % 8``."""
    jobs = []
    for variant in range(3):
        for en, sq, words in BILINGUAL_ROLES:
            jobs.append({"title": f"{en} ({words.split()[0]})", "company": f"Company {variant}",
                         "description": EN.format(role=en.lower(), words=words)})
            jobs.append({"title": f"{sq} ({words.split()[0]})", "company": f"Kompania {variant}",
                         "description": SQ.format(role=sq.lower(), words=words)})
    return jobs
