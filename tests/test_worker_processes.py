"""Worker processes (``flask --app app worker``) sharing one queue: exactly once, SIGKILL, SIGTERM."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.openai_server import EmbeddingsServer
from jobflow.embeddings.text import embedded_texts
from jobflow.jobs import queue
from jobflow.models import Job, QueueItem, WorkerStatus
from jobflow.timeutil import utcnow

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-loopback"
ROLES = ["Nurse", "Python Developer", "Accountant", "Truck Driver", "Chef", "Sales Agent", "Teacher", "Electrician"]


def add_jobs(n: int) -> list:
    """Insert ``n`` distinct active jobs and queue them in one bulk write each."""
    now = utcnow()
    docs = [{"title": f"{ROLES[i % len(ROLES)]} {i}", "company": f"Company {i % 37}", "location": "Tirana",
             "description": f"Posting {i}: a {ROLES[i % len(ROLES)].lower()} for team {i % 11}, shifts and duties "
                            f"as agreed, contract {i}.", "status": "active", "createdAt": now, "updatedAt": now}
            for i in range(n)]
    ids = Job._get_collection().insert_many(docs).inserted_ids
    assert queue.enqueue_many(ids, priority=queue.PRIORITY_LIVE) == n
    return ids


def worker_env(db_uri: str, server: EmbeddingsServer, tmp_path: Path, **extra) -> dict:
    env = dict(os.environ)
    env.update({"MONGODB_URI": db_uri, "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": KEY,
                "OPENAI_BASE_URL": server.base_url, "EMBEDDING_WORKER_INTERVAL": "200",
                "WORKER_HEARTBEAT_INTERVAL": "1000", "WORKER_DEAD_THRESHOLD": "5000", "DEMO_DATA": "false",
                "DEBUG_WORKER": "true", "JOBFLOW_INSTANCE_PATH": str(tmp_path / "instance")})
    env.update({k: str(v) for k, v in extra.items()})
    return env


class WorkerProcess:
    """One ``flask --app app worker`` process with its output in a file."""

    def __init__(self, env: dict, log_path: Path):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], cwd=ROOT, env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def workers(tmp_path):
    """Start worker processes; any still running at the end are killed."""
    started: list[WorkerProcess] = []

    def start(env) -> WorkerProcess:
        started.append(WorkerProcess(env, tmp_path / f"worker{len(started)}.log"))
        return started[-1]
    yield start
    for w in started:
        if w.process.poll() is None:
            w.process.kill()
            w.process.wait(10)


def wait_until(condition, timeout: float, what: str, processes=(), every: float = 0.25) -> None:
    """Poll ``condition`` (gently: each poll is a query the workers' database also serves)."""
    deadline = time.monotonic() + timeout
    while not condition():
        for w in processes:
            assert w.process.poll() is None, f"worker exited early:\n{w.output()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {queue.counts()}"
        time.sleep(every)


def lists_wrong() -> list:
    """list_problems with the minimum score the workers use: balanced once a correction is in force, else raw."""
    from faults.conftest import list_problems

    from jobflow.embeddings.openai_provider import OpenAIProvider
    from jobflow.similarity import stored_correction
    balanced = stored_correction.header("text-embedding-3-small").get("version")
    return list_problems(top_n=10, min_score=OpenAIProvider.balanced_min_score if balanced
                         else OpenAIProvider.default_min_score)


def completed() -> int:
    return QueueItem._get_collection().count_documents({"status": "completed"})


def status_of_pid(pid: int) -> dict:
    return WorkerStatus._get_collection().find_one({"pid": pid}) or {}


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
        wait_until(lambda: completed() == 1000, 55, "1,000 jobs embedded", procs, every=0.5)
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
        wait_until(lambda: server.in_flight > 0 and completed() > 0, 40, "a batch in flight", [doomed], every=0.02)
        assert doomed.stop(signal.SIGKILL) == -signal.SIGKILL
        dead_id = status_of_pid(doomed.pid)["workerId"]
        time.sleep(0.5)  # a write the killed process had already sent may still be applied by the server
        held = QueueItem._get_collection().count_documents({"status": "processing", "lockedBy": dead_id})
        assert held > 0
        rescuer = workers(env)
        wait_until(lambda: completed() == 600, 60, "the rescue", [rescuer])
        # Vectors the dead worker stored but whose lists it had not flushed: their items were claimed again,
        # found current, and their lists (and the lists they enter) computed again.
        wait_until(lambda: not lists_wrong(), 30, "every list equal to a brute-force top 10", [rescuer])
        assert rescuer.stop() == 0
    assert_everything_embedded(ids)
    recovered = QueueItem._get_collection().count_documents({"attempts": 2})
    assert recovered == held   # the items the dead worker held, each claimed once more
    assert status_of_pid(rescuer.pid)["state"] == "stopped"
    assert KEY not in doomed.output() + rescuer.output()


def test_sigterm_mid_batch_exits_cleanly(app, db_uri, tmp_path, workers):
    ids = add_jobs(200)
    with EmbeddingsServer(latency=1.0) as server:
        proc = workers(worker_env(db_uri, server, tmp_path))
        wait_until(lambda: server.in_flight > 0, 30, "a batch in flight", [proc], every=0.02)
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
