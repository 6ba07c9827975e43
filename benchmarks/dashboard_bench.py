"""Time the dashboard pages with 100,000 queue items and 20,000 jobs.

Run from the repo root: ``python -m benchmarks.dashboard_bench [--items 100000] [--jobs 20000] [--repeat 5]``.
It starts a throw-away SecantusDB server (or uses ``--uri mongodb://.../db``), seeds a realistic mix
(~2% failed with a few error signatures, a backlog, live, stale and dead workers, three days of minute
samples and a month of hour samples), signs in as an admin and times each page with the Flask test
client: the median of ``--repeat`` runs after one warm-up.
"""
from __future__ import annotations

import argparse
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from bson import ObjectId
from bson.binary import Binary, BinaryVectorDtype

ROOT = Path(__file__).resolve().parent.parent

WORDS = ["Senior", "Junior", "Python", "Java", "Nurse", "Accountant", "Sales", "Manager", "Driver", "Teacher",
         "Engineer", "Developer", "Backend", "Frontend", "Data", "Analyst", "Warehouse", "Chef", "Designer", "Lead"]
COMPANIES = ["Adriatic Soft", "Tirana Tech", "Vlora Logistics", "Durres Health", "Shkoder Foods", "Balkan Bank",
             "Korca Retail", "Elbasan Steel"]
ERRORS = [
    ("rate limited by the provider after 3 retries (request id req_{hex})", 0.45),
    ("provider error 500: upstream timeout after {n} ms", 0.30),
    ("invalid vector: norm is zero for job {oid}", 0.15),
    ("input too long: {n} tokens, the model reads 8191", 0.10),
]
MODEL = "multilingual-e5-small"   # the local provider's model: what the benchmark app runs with


def _oid_at(when: datetime, counter: int) -> ObjectId:
    raw = bytearray(ObjectId.from_datetime(when).binary)
    raw[4:12] = counter.to_bytes(8, "big")
    return ObjectId(bytes(raw))


def _error(rng: random.Random) -> str:
    template = rng.choices([e for e, _ in ERRORS], [w for _, w in ERRORS])[0]
    return template.format(hex=f"{rng.getrandbits(48):012x}", n=rng.randint(1000, 90000), oid=ObjectId())


def seed(queue_items: int = 100_000, jobs: int = 20_000, now: datetime | None = None, rng_seed: int = 7,
         samples: bool = True, chunk: int = 2000) -> dict:
    """Insert a realistic dashboard data set into the connected database; returns what it made."""
    from jobflow.models import Job, QueueItem, WorkerStatus
    from jobflow.timeutil import utcnow
    rng = random.Random(rng_seed)
    nprng = np.random.default_rng(rng_seed)
    now = now or utcnow()
    counter = 0

    # Jobs: most embedded with the current model, a few failed, edited since embedding, or new.
    job_ids: list[ObjectId] = []
    batch = []
    for i in range(jobs):
        counter += 1
        created = now - timedelta(minutes=rng.randint(0, 60 * 24 * 60))
        job_id = _oid_at(created, counter)
        job_ids.append(job_id)
        kind = rng.choices(["current", "failed", "changed", "new", "old_model"], [93, 1.5, 2.5, 2, 1])[0]
        doc = {"_id": job_id, "title": " ".join(rng.sample(WORDS, 3)) + f" {i}", "company": rng.choice(COMPANIES),
               "location": "Tirana", "category": "General", "description": "Responsibilities and skills. " * 40,
               "status": "active" if rng.random() < 0.9 else "closed", "createdAt": created, "updatedAt": created}
        if kind != "new":
            vector = nprng.standard_normal(384).astype(np.float32)
            doc["embedding"] = {
                "status": {"current": "completed", "failed": "failed", "changed": "pending",
                           "old_model": "completed"}[kind],
                "vector": Binary.from_vector(vector / np.linalg.norm(vector), BinaryVectorDtype.FLOAT32),
                "model": "text-embedding-ada-002" if kind == "old_model" else MODEL, "dimensions": 384,
                "textHash": f"{rng.getrandbits(128):032x}", "tokens": rng.randint(150, 700),
                "generatedAt": created + timedelta(minutes=2), "retries": 0}
            if kind == "failed":
                doc["embedding"]["error"] = "provider error 500"
        batch.append(doc)
        if len(batch) >= chunk:
            Job._get_collection().insert_many(batch)
            batch = []
    if batch:
        Job._get_collection().insert_many(batch)

    # Workers: two alive, one stale, two dead (one still holding items), one stopped.
    workers = [("web-1:101:aaaaaa", 10, "running"), ("web-2:102:bbbbbb", 25, "running"),
               ("web-3:103:cccccc", 100, "running"), ("old-1:201:dddddd", 3600, "running"),
               ("old-2:202:eeeeee", 86400, "running"), ("old-3:203:ffffff", 7200, "stopped")]
    for worker_id, age, state in workers:
        WorkerStatus._get_collection().insert_one({
            "workerId": worker_id, "host": worker_id.split(":")[0], "pid": int(worker_id.split(":")[1]),
            "startedAt": now - timedelta(days=1), "lastHeartbeat": now - timedelta(seconds=age), "state": state,
            "provider": "local", "model": MODEL, "processed": rng.randint(1000, 90000), "failed": rng.randint(0, 400),
            "tokensUsed": rng.randint(10**5, 10**7), "memory": {"rss": rng.randint(300, 900) * 2**20, "fraction": 0.31},
            "currentBatch": {"id": "b1", "size": 48, "startedAt": now - timedelta(seconds=3)} if age < 60 else {},
            "indexSize": jobs})

    # Queue items: completed and skipped over the last week, a backlog, a few processing, ~2% failed.
    mix = [("completed", 81.0), ("skipped", 6.0), ("pending", 10.5), ("processing", 0.5), ("failed", 2.0)]
    holders = ["web-1:101:aaaaaa", "web-2:102:bbbbbb", "old-2:202:eeeeee"]
    batch = []
    counts: dict[str, int] = {}
    pending_jobs = 0
    for i in range(queue_items):
        status = rng.choices([s for s, _ in mix], [w for _, w in mix])[0]
        counts[status] = counts.get(status, 0) + 1
        if status == "pending":
            created = now - timedelta(minutes=rng.randint(0, 600))
        elif status == "processing":
            created = now - timedelta(minutes=rng.randint(0, 30))
        else:
            created = now - timedelta(minutes=rng.randint(0, 60 * 24 * 7))
        counter += 1
        if status == "pending":   # at most one pending item per job (a unique index says so)
            job_id = job_ids[pending_jobs] if pending_jobs < len(job_ids) else ObjectId()
            pending_jobs += 1
        else:
            job_id = job_ids[i % len(job_ids)]
        doc = {"_id": _oid_at(created, counter), "jobId": job_id, "taskType": "generate_embedding",
               "status": status, "priority": rng.choice([10, 5, 1]),
               "attempts": 1, "nextAttemptAt": created, "metadata": {"source": rng.choice(["api", "migration"])},
               "errorHistory": [], "createdAt": created, "updatedAt": created}
        if status in ("completed", "skipped", "failed"):
            finished = created + timedelta(seconds=rng.randint(2, 900))
            doc.update(finishedAt=min(finished, now), updatedAt=min(finished, now))
            if status != "failed":
                doc["expiresAt"] = finished + timedelta(days=7)
        if status == "processing":
            doc.update(lockedBy=rng.choice(holders), lockedAt=created)
        if status == "failed":
            error = _error(rng)
            doc.update(attempts=3, lastError=error, errorHistory=[
                {"at": created + timedelta(minutes=k), "attempt": k + 1, "error": error, "owner": holders[k % 2]}
                for k in range(3)])
        batch.append(doc)
        if len(batch) >= chunk:
            QueueItem._get_collection().insert_many(batch)
            batch = []
    if batch:
        QueueItem._get_collection().insert_many(batch)

    if samples:
        seed_samples(now, rng)
    return {"jobs": jobs, "queueItems": queue_items, "byStatus": counts}


def seed_samples(now: datetime, rng: random.Random, minute_days: int = 3, hour_days: int = 45) -> None:
    """Three days of minute samples and 45 days of hour samples with a daily rhythm."""
    from jobflow.models import MetricSample
    end = now.replace(second=0, microsecond=0)
    docs = []
    for i in range(minute_days * 1440, 0, -1):
        t = end - timedelta(minutes=i)
        wave = 1 + 0.6 * np.sin(t.hour / 24 * 2 * np.pi)
        completed = max(0, int(rng.gauss(40 * wave, 6)))
        docs.append({"span": "1m", "time": t, "done": True, "completed": completed,
                     "failures": int(rng.random() < 0.3) * rng.randint(0, 3),
                     "pending": int(300 * wave + rng.gauss(0, 40)),
                     "processing": rng.randint(0, 48), "failed": 2000, "p50Ms": 900 * wave, "p95Ms": 4000 * wave,
                     "tokens": completed * 420, "workersAlive": 3, "expiresAt": t + timedelta(days=14)})
    for i in range(0, len(docs), 2000):
        MetricSample._get_collection().insert_many(docs[i:i + 2000])
    hours = []
    for i in range(hour_days * 24, 0, -1):
        t = end.replace(minute=0) - timedelta(hours=i)
        wave = 1 + 0.6 * np.sin(t.hour / 24 * 2 * np.pi)
        completed = int(40 * 60 * wave)
        hours.append({"span": "1h", "time": t, "done": True, "completed": completed, "failures": rng.randint(0, 40),
                      "pending": int(300 * wave), "processing": 40, "failed": 2000, "p50Ms": 900 * wave,
                      "p95Ms": 4000 * wave, "tokens": completed * 420, "workersAlive": 3,
                      "expiresAt": t + timedelta(days=400)})
    MetricSample._get_collection().insert_many(hours)
    from jobflow.ops.samples import roll_up_day
    for i in range(hour_days, 0, -1):
        roll_up_day((end - timedelta(days=i)).replace(hour=0, minute=0))


def time_pages(client, pages: list[tuple[str, str]], repeat: int = 5, before_each=None) -> list[dict]:
    """Median, min and max milliseconds of each page over ``repeat`` runs after one warm-up."""
    rows = []
    for name, url in pages:
        status = client.get(url).status_code
        times = []
        for _ in range(repeat):
            if before_each is not None:
                before_each()
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            status = response.status_code
        rows.append({"page": name, "url": url, "status": status, "median_ms": round(statistics.median(times), 1),
                     "min_ms": round(min(times), 1), "max_ms": round(max(times), 1)})
    return rows


def run(items: int = 100_000, jobs: int = 20_000, repeat: int = 5, uri: str | None = None,
        verbose: bool = True) -> list[dict]:
    """Seed, then time every dashboard page; one row per page (milliseconds)."""
    from jobflow import create_app
    from jobflow.models import Job, QueueItem
    from jobflow.ops import samples
    data_dir = tempfile.mkdtemp(prefix="jobflow-bench-")
    server = None
    try:
        if uri is None:
            from jobflow.db import EmbeddedServer
            server = EmbeddedServer(Path(data_dir) / "secantus")
            uri = server.ensure().rsplit("/", 1)[0] + "/dashboard_bench"
        app = create_app({"TESTING": True, "MONGODB_URI": uri, "INSTANCE_PATH": str(Path(data_dir) / "instance"),
                          "EMBEDDING_PROVIDER": "local", "OPENAI_API_KEY": "", "SECRET_KEY": "bench",
                          "ADMIN_API_TOKEN": "bench-token", "DEMO_DATA": False, "RATELIMIT_ENABLED": False,
                          "DEBUG_EMBEDDINGS": False, "DEBUG_WORKER": False, "DEBUG_QUEUE": False})
        with app.app_context():
            started = time.perf_counter()
            made = seed(items, jobs)
            if verbose:
                print(f"seeded {items:,} queue items and {jobs:,} jobs in {time.perf_counter() - started:.0f}s: "
                      f"{made['byStatus']}", file=sys.stderr)
            from tests.support.web import sign_in
            client = app.test_client()
            sign_in(client, "bench@example.com", "bench-password")
            some_job = Job._get_collection().find_one({"embedding.status": "completed"}, {"_id": 1, "title": 1})
            some_item = QueueItem._get_collection().find_one({"status": "failed"}, {"_id": 1})
            prefix = some_job["title"].split()[0].lower()
            pages = [
                ("overview", "/admin/embeddings"),
                ("overview, 7 days", "/admin/embeddings?range=7d"),
                ("overview live refresh", "/admin/embeddings?fragment=live"),
                ("queue, all states", "/admin/embeddings/queue"),
                ("queue, pending", "/admin/embeddings/queue?status=pending"),
                ("queue, failed", "/admin/embeddings/queue?status=failed"),
                ("queue, completed, task", "/admin/embeddings/queue?status=completed&task=generate_embedding"),
                ("queue, search title", f"/admin/embeddings/queue?q={prefix}+{some_job['title'].split()[1].lower()}"),
                ("queue, search job id", f"/admin/embeddings/queue?q={some_job['_id']}"),
                ("queue item", f"/admin/embeddings/queue/{some_item['_id']}"),
                ("failures", "/admin/embeddings/failures"),
                ("workers", "/admin/embeddings/workers"),
                ("jobs search", f"/admin/embeddings/jobs?q={prefix}"),
                ("job detail", f"/admin/embeddings/jobs/{some_job['_id']}"),
                ("settings", "/admin/embeddings/settings"),
                ("health", "/api/health/embeddings"),
                ("api status", "/api/admin/embeddings/status"),
            ]
            # The worker writes a sample each minute: pages read large counts from it.
            started = time.perf_counter()
            samples.record_sample(app.config)
            sample_ms = (time.perf_counter() - started) * 1000
            rows = time_pages(client, pages, repeat)
            # Older pages: the cursor of the second page of completed items.
            older = re.search(r'href="(/admin/embeddings/queue\?before=[^"]+)"',
                              client.get("/admin/embeddings/queue?status=completed").get_data(as_text=True))
            if older:
                rows += time_pages(client, [("queue, completed, page 2", older.group(1).replace("&amp;", "&"))],
                                   repeat)
            rows.append({"page": "record_sample (worker, once a minute)", "url": "-", "status": 0,
                         "median_ms": round(sample_ms, 1), "min_ms": round(sample_ms, 1),
                         "max_ms": round(sample_ms, 1)})
            # Without a fresh sample (no worker running): large counts are taken live, then kept a minute.
            from jobflow.models import MetricSample
            from jobflow.ops.counts import _live_cache
            MetricSample._get_collection().update_many({"span": "1m"}, {"$set": {"done": False}})
            no_sample = [("overview", "/admin/embeddings"), ("health", "/api/health/embeddings")]
            rows += [dict(r, page=r["page"] + ", no worker, first view") for r in time_pages(
                client, no_sample, repeat, before_each=_live_cache.clear)]
            rows += [dict(r, page=r["page"] + ", no worker, next views") for r in time_pages(
                client, no_sample, repeat)]
            # A bulk action (changes the data, so last): retry every failed item through jobflow.jobs.queue.
            from jobflow.ops import actions
            started = time.perf_counter()
            count = actions.retry_failed(actions.Actor("bench", "cli"))
            seconds = time.perf_counter() - started
            rows.append({"page": f"action: retry {count:,} failed items", "url": "-", "status": 0,
                         "median_ms": round(seconds * 1000, 1), "min_ms": round(seconds * 1000, 1),
                         "max_ms": round(seconds * 1000, 1)})
        return rows
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def print_table(rows: list[dict]) -> None:
    """A plain-text table of the rows."""
    width = max(len(r["page"]) for r in rows)
    print(f"{'page':<{width}}  {'median ms':>9}  {'min':>7}  {'max':>7}  status")
    for r in rows:
        print(f"{r['page']:<{width}}  {r['median_ms']:>9.1f}  {r['min_ms']:>7.1f}  {r['max_ms']:>7.1f}  {r['status']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--uri", default=None, help="use this MongoDB database instead of a throw-away SecantusDB")
    args = parser.parse_args(argv)
    print_table(run(args.items, args.jobs, args.repeat, args.uri))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
