"""Worker processes (``flask --app app worker``) sharing one queue: exactly once, SIGKILL, SIGTERM."""
from __future__ import annotations

import signal
import sys
import time

import pytest

from jobflow.embeddings.text import embedded_texts
from jobflow.jobs import queue
from jobflow.models import Job, QueueItem
from jobflow.timeutil import utcnow
from tests.support import KEY
from tests.support.openai_server import EmbeddingsServer
from tests.support.processes import Process
from tests.support.seeding import add_jobs
from tests.support.waiting import seconds_until
from tests.support.workers import completed_count, list_problems, queue_state, status_of_pid, worker_env

pytestmark = pytest.mark.slow


@pytest.fixture
def workers(tmp_path):
    """Start worker processes (debug logs on); any still running at the end are killed."""
    started: list[Process] = []

    def start(env) -> Process:
        started.append(Process("worker", [sys.executable, "-m", "flask", "--app", "app", "worker"],
                               {**env, "DEBUG_WORKER": "true"}, tmp_path / f"worker{len(started)}.log"))
        return started[-1]
    yield start
    for w in started:
        w.kill()


def assert_everything_embedded(ids) -> None:
    counts = queue.counts()
    assert counts["pending"] == counts["processing"] == counts["failed"] == 0, counts
    assert counts["completed"] == len(ids)
    assert Job._get_collection().count_documents({"embedding.status": "completed"}) == len(ids)


def test_three_workers_embed_every_job_exactly_once(app, db_uri, tmp_path, workers):
    ids = add_jobs(1000)
    with EmbeddingsServer() as server:
        env = worker_env(db_uri, server, tmp_path)
        procs = [workers(env) for _ in range(3)]
        seconds_until("1,000 jobs embedded", lambda: completed_count() == 1000, 150, every=0.5, processes=procs, seen=queue_state)
        assert [w.stop() for w in procs] == [0, 0, 0]
        embedded = server.embedded
    assert_everything_embedded(ids)
    texts = [t for doc in Job._get_collection().find({}, {"title": 1, "company": 1, "location": 1, "category": 1,
                                                         "description": 1}) for t in embedded_texts(doc)]
    assert len(set(texts)) == len(texts)                                  # every text is distinct
    assert all(embedded[t] == 1 for t in texts) and sum(embedded.values()) == len(texts)
    statuses = [status_of_pid(w.pid) for w in procs]
    assert [s.get("state") for s in statuses] == ["stopped"] * 3
    assert sum(s["processed"] for s in statuses) == 1000
    assert sum(1 for s in statuses if s["processed"]) >= 2               # the work was really shared
    for w in procs:
        assert KEY not in w.output() and "WORKER STATS" in w.output()


def test_sigkill_mid_batch_loses_nothing(app, db_uri, tmp_path, workers):
    ids = add_jobs(600)     # several claims: items complete at a flush, here every 2 s of a drain
    with EmbeddingsServer(latency=1.0) as server:
        env = worker_env(db_uri, server, tmp_path, QUEUE_STUCK_TIMEOUT=3000, SIMILARITY_FLUSH_INTERVAL=2000)
        doomed = workers(env)
        # Killed while a batch is half stored: some of it completed, some still at the provider.
        seconds_until("a batch in flight", lambda: server.in_flight > 0 and completed_count() > 0, 40, every=0.02,
                      processes=[doomed], seen=queue_state)
        assert doomed.stop(signal.SIGKILL) == -signal.SIGKILL
        killed_at = utcnow()
        dead_id = status_of_pid(doomed.pid)["workerId"]
        held = {d["_id"] for d in QueueItem._get_collection().find({"status": "processing", "lockedBy": dead_id},
                                                                    {"_id": 1})}
        assert held
        # The rescuer takes the dead worker's items after 8 s; its own are never taken as hung (24 s) while a
        # batch of a loaded machine runs long.
        rescuer = workers({**env, "QUEUE_STUCK_TIMEOUT": "8000"})
        seconds_until("the rescue", lambda: completed_count() == 600, 60, processes=[rescuer], seen=queue_state)
        # Vectors the dead worker stored but whose lists it had not flushed: their items were claimed again,
        # found current, and their lists (and the lists they enter) computed again.
        seconds_until("every list equal to a brute-force top 10", lambda: not list_problems(), 30, processes=[rescuer],
                      seen=queue_state)
        assert rescuer.stop() == 0
    assert_everything_embedded(ids)
    items = {d["_id"]: d for d in QueueItem._get_collection().find({}, {"attempts": 1, "status": 1, "finishedAt": 1})}
    twice = {i for i, d in items.items() if d["attempts"] == 2}
    assert twice and twice <= held and all(d["attempts"] <= 2 for d in items.values())
    # Each item the dead worker held was claimed once more, unless a completion it had already sent reached the
    # server after the count above (a loaded database applies a dead client's last write late).
    for item_id in held - twice:
        assert items[item_id]["status"] == "completed" and items[item_id]["finishedAt"] <= killed_at, items[item_id]
    assert status_of_pid(rescuer.pid)["state"] == "stopped"
    assert KEY not in doomed.output() + rescuer.output()


def test_sigterm_mid_batch_exits_cleanly(app, db_uri, tmp_path, workers):
    ids = add_jobs(200)
    with EmbeddingsServer(latency=1.0) as server:
        proc = workers(worker_env(db_uri, server, tmp_path))
        seconds_until("a batch in flight", lambda: server.in_flight > 0, 30, every=0.02, processes=[proc], seen=queue_state)
        started = time.monotonic()
        assert proc.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 20
    assert queue.counts()["processing"] == 0
    assert_everything_embedded(ids)   # the batch in flight was finished within the grace period
    status = status_of_pid(proc.pid)
    assert status["state"] == "stopped" and status["currentBatch"] == {}
    output = proc.output()
    assert "received SIGTERM" in output and "stopped (in-flight work finished" in output
    assert KEY not in output
