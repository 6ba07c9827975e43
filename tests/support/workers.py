"""Worker processes and what they leave behind: their settings, the queue's state, the stored lists checked
against a brute-force top N, what reached the provider, and measured outcomes kept for the record."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from jobflow.embeddings.language import stored_language
from jobflow.embeddings.text import embedded_texts
from jobflow.jobs import queue
from jobflow.models import Job, QueueItem, WorkerStatus
from jobflow.models.fields import vector_from_bson
from jobflow.similarity import stored_correction
from jobflow.timeutil import utcnow
from tests.support import KEY
from tests.support.openai_server import EmbeddingsServer
from tests.support.waiting import seconds_until

TOP_N = 10
MIN_SCORE = 0.0
RESULTS = Path(os.environ.get("JOBFLOW_FAULT_RESULTS", "/tmp/jobflow-faults/results.json"))


# ----- results -----------------------------------------------------------------------------------------------

def record(scenario: str, **figures) -> None:
    """Print one measured outcome and keep it in the results file (one entry per scenario, newest wins)."""
    figures = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in figures.items()}
    print(f"\nFAULT RESULT {scenario}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        data = {}
    load = os.getloadavg()
    data[scenario] = {**figures, "at": utcnow().isoformat(timespec="seconds"),
                      "loadavg": [round(x, 2) for x in load]}
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True))


# ----- settings and state ------------------------------------------------------------------------------------

def worker_env(db_uri: str, server: EmbeddingsServer, tmp_path: Path, **extra) -> dict:
    """Settings of a worker (or gunicorn) process on the loopback provider, fast intervals for tests."""
    env = dict(os.environ)
    env.update({"MONGODB_URI": db_uri, "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": KEY,
                "OPENAI_BASE_URL": server.base_url, "EMBEDDING_WORKER_INTERVAL": "200",
                "WORKER_HEARTBEAT_INTERVAL": "1000", "WORKER_DEAD_THRESHOLD": "5000", "DEMO_DATA": "false",
                "SIMILARITY_MIN_SCORE": str(MIN_SCORE), "SIMILARITY_TOP_N": str(TOP_N), "DEBUG_WORKER": "false",
                "DEBUG_QUEUE": "false", "DEBUG_EMBEDDINGS": "false",
                "JOBFLOW_INSTANCE_PATH": str(tmp_path / "instance"), "ADMIN_API_TOKEN": "fault-token-0123456789",
                "SECRET_KEY": "fault-secret-0123456789abcdef0123456789"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def texts_of(ids) -> list[str]:
    """The texts the worker sends to the provider for these jobs."""
    fields = {"title": 1, "company": 1, "location": 1, "category": 1, "description": 1}
    return [t for doc in Job._get_collection().find({"_id": {"$in": list(ids)}}, fields) for t in embedded_texts(doc)]


def drained(ids=None) -> bool:
    """Nothing pending or processing, and (for ``ids``) every job's item completed."""
    coll = QueueItem._get_collection()
    if coll.count_documents({"status": {"$in": ["pending", "processing"]}}, limit=1):
        return False
    if ids is None:
        return True
    return coll.count_documents({"jobId": {"$in": list(ids)}, "status": "completed"}) == len(ids)


def queue_state():
    """The queue's counts by status (for a failure message)."""
    return queue.counts()


def completed_count() -> int:
    return QueueItem._get_collection().count_documents({"status": "completed"})


def held_count(owner: str | None = None) -> int:
    """Items being processed (by ``owner``, or by anyone)."""
    query = {"status": "processing", **({"lockedBy": owner} if owner else {})}
    return QueueItem._get_collection().count_documents(query)


def status_of_pid(pid: int) -> dict:
    return WorkerStatus._get_collection().find_one({"pid": pid}) or {}


def assert_end_state(ids) -> None:
    """Nothing stuck; every job has exactly one queue item, completed, and a stored embedding."""
    counts = queue.counts()
    assert counts["pending"] == counts["processing"] == counts["failed"] == 0, counts
    items = list(QueueItem._get_collection().find({"jobId": {"$in": list(ids)}}, {"jobId": 1, "status": 1}))
    per_job: dict = {}
    for item in items:
        per_job.setdefault(item["jobId"], []).append(item["status"])
    assert len(per_job) == len(ids), f"{len(ids) - len(per_job)} jobs have no queue item"
    assert all(v == ["completed"] for v in per_job.values()), \
        [v for v in per_job.values() if v != ["completed"]][:5]
    done = Job._get_collection().count_documents({"_id": {"$in": list(ids)}, "embedding.status": "completed",
                                                  "embedding.vector": {"$exists": True}})
    assert done == len(ids), f"{len(ids) - done} jobs without a stored embedding"


def provider_duplicates(server: EmbeddingsServer, ids) -> tuple[int, int, dict]:
    """(texts never embedded, extra embeddings, text -> count for texts embedded more than once)."""
    counts = server.embedded
    texts = texts_of(ids)
    assert len(set(texts)) == len(texts), "the seeded texts must be distinct"
    missing = sum(1 for t in texts if counts[t] == 0)
    twice = {t: counts[t] for t in texts if counts[t] > 1}
    return missing, sum(c - 1 for c in twice.values()), twice


# ----- similar-jobs lists --------------------------------------------------------------------------------------

def list_problems(top_n: int = TOP_N, min_score: float = MIN_SCORE, tolerance: float = 1e-5) -> list[str]:
    """Differences between every stored list and a brute-force top-N over the stored vectors (ties allowed),
    corrected by the language correction in force in the database, as the workers must have them."""
    docs = list(Job._get_collection().find({"status": "active", "embedding.status": "completed"},
                                           {"embedding.vector": 1, "embedding.model": 1, "embedding.language": 1,
                                            "language": 1, "similarJobs": 1}))
    ids = [d["_id"] for d in docs]
    if not ids:
        return []
    raw = np.vstack([vector_from_bson(d["embedding"]["vector"]) for d in docs])
    correction = stored_correction.load(docs[0]["embedding"]["model"])
    matrix = correction.apply(raw, [stored_language(d) for d in docs])[0].astype(np.float64)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    scores = matrix @ matrix.T
    np.fill_diagonal(scores, -np.inf)
    row = {job_id: n for n, job_id in enumerate(ids)}
    problems = []
    for n, doc in enumerate(docs):
        eligible = np.sort(scores[n][scores[n] >= min_score])[::-1]
        expected_len = min(top_n, len(eligible))
        stored = [(s["jobId"], float(s["score"])) for s in doc.get("similarJobs") or []]
        where = f"list of {doc['_id']}"
        if len(stored) != expected_len:
            problems.append(f"{where}: {len(stored)} entries, expected {expected_len}")
            continue
        if len({s[0] for s in stored}) != len(stored) or any(s[0] == doc["_id"] for s in stored):
            problems.append(f"{where}: repeats an entry or lists the job itself")
            continue
        unknown = [s[0] for s in stored if s[0] not in row]
        if unknown:
            problems.append(f"{where}: lists {len(unknown)} jobs that are not embedded and active")
            continue
        true = [scores[n][row[other]] for other, _ in stored]
        if any(abs(t - s) > tolerance for t, (_, s) in zip(true, stored)):
            problems.append(f"{where}: stored scores differ from the vectors' cosine")
        elif any(a < b - tolerance for a, b in zip(true, true[1:])):
            problems.append(f"{where}: not ordered by score")
        elif expected_len and min(true) < eligible[expected_len - 1] - tolerance:
            problems.append(f"{where}: misses a closer job ({min(true):.5f} < {eligible[expected_len - 1]:.5f})")
    return problems


def wait_lists_correct(timeout: float = 30, processes=()) -> float:
    """Seconds until every stored list is a correct top-N (workers converge through their index sync)."""
    return seconds_until("every stored list to be a correct top N", lambda: not list_problems(), timeout,
                         every=0.5, processes=processes, seen=lambda: list_problems()[:3])
