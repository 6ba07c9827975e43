"""Helpers of the fault suite: processes to start and kill, jobs to seed, end-state and list checks, results."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from pymongo.errors import PyMongoError

from devtools.openai_server import EmbeddingsServer
from jobflow.db import free_port, ping
from jobflow.embeddings.language import stored_language
from jobflow.embeddings.text import embedded_texts
from jobflow.jobs import queue
from jobflow.models import Job, QueueItem, WorkerStatus
from jobflow.models.fields import vector_from_bson
from jobflow.similarity import stored_correction
from jobflow.timeutil import utcnow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KEY = "sk-test-loopback"
TOP_N = 10
MIN_SCORE = 0.0
RESULTS = Path(os.environ.get("JOBFLOW_FAULT_RESULTS", "/tmp/jobflow-faults/results.json"))

ROLES = [("Registered Nurse", "Healthcare"), ("Python Developer", "Software Development"),
         ("Accountant", "Finance"), ("Truck Driver", "Logistics"), ("Chef", "Hospitality & Tourism"),
         ("Sales Agent", "Sales"), ("Primary Teacher", "Education"), ("Electrician", "Construction"),
         ("Data Analyst", "Software Development"), ("Hotel Receptionist", "Hospitality & Tourism")]
CITIES = ["Tirana", "Durres", "Vlore", "Shkoder", "Korce", "Elbasan", "Fier"]


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


# ----- processes ---------------------------------------------------------------------------------------------

class DatabaseProcess:
    """A SecantusDB server on a fixed port and data folder: kill it (SIGKILL) and start it again on both."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.data_dir = self.folder / "data"
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log = self.folder / "secantus.log"

    def uri(self, name: str = "jobflow") -> str:
        return f"mongodb://127.0.0.1:{self.port}/{name}"

    def start(self, timeout: float = 30) -> float:
        """Start the server and wait until it answers; the seconds that took."""
        self.folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port),
                 "--storage-path", str(self.data_dir), "--log-level", "WARNING"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        while not ping(f"mongodb://127.0.0.1:{self.port}", 300):
            if self.process.poll() is not None:
                raise RuntimeError(f"SecantusDB exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            if time.monotonic() - started > timeout:
                raise RuntimeError("SecantusDB did not answer in time")
            time.sleep(0.05)
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL: no shutdown, no checkpoint."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class Proc:
    """A child process with its output in a file."""

    def __init__(self, name: str, command: list[str], env: dict, log_path: Path):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float = 40) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def procs(tmp_path):
    """Start child processes (``procs.worker(env)``, ``procs.gunicorn(env)``); any left running are killed."""
    started: list[Proc] = []

    class Starter:
        def worker(self, env: dict) -> Proc:
            return self._start("worker", [sys.executable, "-m", "flask", "--app", "app", "worker"], env)

        def gunicorn(self, env: dict) -> Proc:
            return self._start("gunicorn", [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py"], env)

        def _start(self, name, command, env) -> Proc:
            proc = Proc(name, command, env, tmp_path / f"{name}{len(started)}.log")
            started.append(proc)
            return proc
    yield Starter()
    for proc in started:
        if proc.alive():
            proc.process.kill()
            proc.process.wait(10)


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


def wait_until(condition, timeout: float, what: str, processes=(), every: float = 0.2) -> float:
    """Poll ``condition`` (a database or connection error counts as not yet); the seconds it took."""
    started = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except (PyMongoError, OSError):   # the database or the web server is not there (yet)
            pass
        for proc in processes:
            assert proc.alive(), f"{proc.name} exited early:\n{proc.output()[-3000:]}"
        if time.monotonic() - started > timeout:
            try:
                state = queue.counts()
            except PyMongoError as exc:
                state = type(exc).__name__
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: {state}")
        time.sleep(every)


def http_get(url: str, timeout: float = 15) -> tuple[int, dict | str, float, dict]:
    """GET: (status, JSON body or text, seconds, headers); error statuses are answers too."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, raw, headers = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, raw, headers = exc.code, exc.read(), dict(exc.headers)
    elapsed = time.monotonic() - started
    text = raw.decode("utf-8", "replace")
    try:
        body = json.loads(text) if "json" in headers.get("Content-Type", "") else text
    except ValueError:
        body = text
    return status, body, elapsed, headers


# ----- data ----------------------------------------------------------------------------------------------------

def add_jobs(n: int, tag: str = "") -> list:
    """Insert ``n`` active jobs with distinct texts (roles, cities, numbers) and queue them in one bulk write."""
    now = utcnow()
    docs = []
    for i in range(n):
        role, category = ROLES[i % len(ROLES)]
        city = CITIES[(i // len(ROLES)) % len(CITIES)]
        docs.append({"title": f"{role} {tag}{i}", "category": category, "company": f"Company {i % 29}",
                     "location": city, "status": "active", "createdAt": now, "updatedAt": now,
                     "description": f"{role} in {city}: shift pattern {i % 5}, team {i % 11}, contract {tag}{i}."})
    ids = Job._get_collection().insert_many(docs).inserted_ids
    assert queue.enqueue_many(ids, priority=queue.PRIORITY_LIVE) == n
    return ids


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
    started = time.monotonic()
    problems: list[str] = []
    while time.monotonic() - started < timeout:
        try:
            problems = list_problems()
        except PyMongoError as exc:
            problems = [type(exc).__name__]
        if not problems:
            return time.monotonic() - started
        for proc in processes:
            assert proc.alive(), f"{proc.name} exited early:\n{proc.output()[-3000:]}"
        time.sleep(0.5)
    raise AssertionError(f"{len(problems)} lists still wrong after {timeout}s, e.g. {problems[:3]}")


def assert_clean_output(*processes, secrets=(KEY,)) -> None:
    """No traceback and no secret in what the processes printed."""
    for proc in processes:
        text = proc.output()
        assert "Traceback" not in text, f"{proc.name} printed a traceback:\n{text[-3000:]}"
        for secret in secrets:
            assert secret not in text, f"{proc.name} printed a secret"
