"""Change capture, outside in: another OS process writes the board's jobs straight into the database with pymongo,
and the product started as the README starts it keeps up.

The module runs gunicorn and two ``flask --app app worker`` processes on a SecantusDB server of its own (so the
tests can kill it, restart it, and restart it keeping almost no history). Every effect is checked after the last
write, with a deadline, through HTTP and the database. ``python app.py`` with ``scripts/mongosh`` as the writer,
and a board with its own collection, are in test_other_writers.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from bson import ObjectId
from pymongo import MongoClient

from jobflow.db import free_port
from jobflow.embeddings.text import embedded_texts
from tests.support.database import DatabaseServer, database
from tests.support.openai_server import EmbeddingsServer
from tests.support.processes import assert_clean_output
from tests.support.waiting import wait_until
from tests.support.web import Browser, api, http_get, metric_values

from .conftest import FLASK, GUNICORN, Product

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

KEY = "sk-test-acceptance-capture-5d1e"
TOKEN = "acc-capture-token-7f3a9b21"
SECRET_KEY = "acc-capture-secret-2b8c4d-91e0f7a6c3d5"
ADMIN = ("ops@example.com", "capture-admin-pass")
DEADLINE = 300          # seconds after the last write for every effect to hold (a loaded 2-core machine)
ROLES = ["Nurse", "Python Developer", "Accountant", "Truck Driver", "Chef", "Electrician", "Teacher", "Sales Agent"]

# The board's own writer: a separate OS process speaking only pymongo. It reads one JSON command on stdin, retries
# what the database refused while it was down, and prints one JSON line of what it wrote.
WRITER = r'''
import json, sys, time
from datetime import datetime, timezone
from bson import ObjectId
from pymongo import MongoClient
from pymongo.errors import PyMongoError

command = json.load(sys.stdin)
# journal: an acknowledged write survives a SIGKILL of the server (without it the server may lose the last ones,
# and no product can embed a job that is not there)
jobs = MongoClient(command["uri"], serverSelectionTimeoutMS=2000, journal=command.get("journal", False)).get_default_database().jobs
now = lambda: datetime.now(timezone.utc)
roles = command.get("roles", [])

def posting(tag, i):
    role = roles[i % len(roles)]
    return {"title": f"{role} {tag}-{i}", "company": f"Company {i % 17}", "location": "Tirana", "status": "active",
            "description": f"{role} wanted: team {i % 9}, shift {i % 4}, posting {tag}-{i}.",
            "createdAt": now(), "updatedAt": now()}

def retry(write):
    deadline = time.monotonic() + 120
    while True:
        try:
            return write()
        except PyMongoError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)

out = {}
op = command["op"]
if op == "insert_many":
    out["ids"] = [str(i) for i in jobs.insert_many([posting(command["tag"], i) for i in range(command["n"])]).inserted_ids]
elif op == "trickle":
    ids = []
    for i in range(command["n"]):
        doc = posting(command["tag"], i)
        ids.append(str(retry(lambda: jobs.insert_one(dict(doc)).inserted_id)))
        time.sleep(1.0 / command["rate"])
        if i % 25 == 0:
            print(json.dumps({"written": i + 1}), flush=True)
    out["ids"] = ids
elif op == "mixed":
    ids = lambda key: [ObjectId(i) for i in command.get(key, [])]
    for i in ids("retitle"):
        retry(lambda: jobs.update_one({"_id": i}, {"$set": {"title": f"Senior {i}", "updatedAt": now()}}))
    for i in ids("salary"):
        retry(lambda: jobs.update_one({"_id": i}, {"$set": {"salaryRange": "1,200-1,500 EUR", "updatedAt": now()}}))
    for i in ids("close"):
        retry(lambda: jobs.update_one({"_id": i}, {"$set": {"status": "closed"}}))
    for i in ids("delete"):
        retry(lambda: jobs.delete_one({"_id": i}))
    for n, i in enumerate(ids("replace")):
        retry(lambda: jobs.replace_one({"_id": i}, {"title": f"Replaced role {n}", "company": "New Owner",
                                                     "description": f"A different posting altogether, number {n}.",
                                                     "status": "active", "createdAt": now(), "updatedAt": now()}))
    bad = [{"title": 42}, {"title": None}, {"createdAt": "not a date"}, {"embedding": "garbage"},
           {"similarJobs": "garbage"}]
    out["misfits"] = [str(jobs.insert_one({**posting("misfit", n), **bad[n % len(bad)]}).inserted_id)
                      for n in range(command.get("misfits", 0))]
print(json.dumps(out), flush=True)
'''


class Board:
    """The product (gunicorn + two workers) on its own database server, and the board's writer."""

    def __init__(self, folder: Path, provider: EmbeddingsServer):
        self.db = DatabaseServer(folder / "db")
        self.db.start()
        self.uri = self.db.uri("board")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.provider = provider
        self.writer = folder / "writer.py"
        self.writer.write_text(WRITER)
        self.product = Product(folder / "jobflow")
        self.product.write_env({
            "MONGODB_URI": self.uri, "PORT": self.port, "HOST": "127.0.0.1", "WEB_CONCURRENCY": 2,
            "DEMO_DATA": "false", "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": provider.base_url, "ADMIN_API_TOKEN": TOKEN, "SECRET_KEY": SECRET_KEY,
            "EMBEDDING_WORKER_INTERVAL": 300, "WORKER_HEARTBEAT_INTERVAL": 1000, "WORKER_DEAD_THRESHOLD": 5000,
            "QUEUE_STUCK_TIMEOUT": 20000, "SIMILARITY_MIN_SCORE": "0.0"})
        self.web = None
        self.workers: list = []
        self.jobs = database(self.uri).jobs

    def start(self) -> None:
        self.web = self.product.start("gunicorn", GUNICORN)
        self.workers = [self.product.start("worker", FLASK + ["worker"]) for _ in range(2)]
        wait_until("gunicorn to answer", lambda: http_get(self.base + "/api/jobs")[0] == 200, 90,
                   processes=[self.web, *self.workers])
        wait_until("one worker to capture changes", lambda: self.capture().get("owner"), 60,
                   processes=self.workers)

    def stop(self) -> None:
        for proc in [self.web, *self.workers]:
            if proc is not None and proc.alive():
                assert proc.stop(signal.SIGTERM, 60) == 0, proc.tail()

    @property
    def processes(self) -> list:
        return [p for p in [self.web, *self.workers] if p is not None]

    def write(self, op: str, **command) -> dict:
        """Run the board's writer to its end."""
        done = subprocess.run([sys.executable, str(self.writer)], input=json.dumps({"uri": self.uri, "op": op,
                              "roles": ROLES, **command}), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def write_in_background(self, op: str, **command) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, str(self.writer)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        process.stdin.write(json.dumps({"uri": self.uri, "op": op, "roles": ROLES, **command}))
        process.stdin.close()
        process.stdin = None          # communicate() later reads its output only
        return process

    def capture(self) -> dict:
        return database(self.uri).jobflowcapture.find_one({"_id": "jobs"}) or {}

    # ----- what must hold ----------------------------------------------------------------------------------------
    def docs(self, ids, fields: dict, collection: str = "jobs", key: str = "_id") -> list:
        """The documents of ``ids``, 50 ids a query (a long ``$in`` costs the embedded database its square)."""
        ids = oids(ids)
        coll = database(self.uri)[collection]
        return [d for start in range(0, len(ids), 50)
                for d in coll.find({key: {"$in": ids[start:start + 50]}}, fields)]

    def embedded(self, ids, after=None) -> int:
        """How many of these jobs hold a completed embedding (made after ``after``)."""
        return sum(1 for d in self.docs(ids, {"embedding.status": 1, "embedding.dimensions": 1,
                                              "embedding.generatedAt": 1})
                   if (d.get("embedding") or {}).get("status") == "completed" and d["embedding"].get("dimensions")
                   and (after is None or d["embedding"]["generatedAt"] > after))

    def wait_embedded(self, ids, what: str, after=None, timeout: float = DEADLINE) -> None:
        wait_until(what, lambda: self.embedded(ids, after) == len(ids), timeout, every=2,
                   processes=self.processes, seen=lambda: f"{self.embedded(ids, after)} of {len(ids)}")

    def listed(self, ids) -> int:
        return sum(1 for d in self.docs(ids, {"similarJobs.jobId": 1}) if len(d.get("similarJobs") or []) >= 10)

    def wait_listed(self, ids, timeout: float = DEADLINE) -> None:
        """Every one of these jobs has a full list (10 entries at minimum score 0)."""
        wait_until("every job's list", lambda: self.listed(ids) == len(ids), timeout, every=2,
                   processes=self.processes, seen=lambda: f"{self.listed(ids)} of {len(ids)}")

    def holding(self, gone) -> int:
        """Active jobs whose list names any of ``gone`` (every list read once, compared here)."""
        gone = set(oids(gone))
        return sum(1 for d in self.jobs.find({"status": "active"}, {"similarJobs.jobId": 1})
                   if any(e.get("jobId") in gone for e in d.get("similarJobs") or []))

    def wait_gone(self, gone, timeout: float = DEADLINE) -> None:
        """No list an active job serves names these jobs (a closed job's own list is never served)."""
        wait_until("the closed and deleted jobs to leave every list", lambda: self.holding(gone) == 0,
                   timeout, every=2, processes=self.processes, seen=lambda: self.holding(gone))

    def index_sizes(self) -> list:
        """The similarity index size each running worker last reported."""
        return sorted(d.get("indexSize", 0) for d in database(self.uri).workerstatuses.find({"state": {"$ne": "stopped"}}))

    def queue_items(self, ids) -> int:
        return len(self.docs(ids, {"_id": 1}, "jobqueues", "jobId"))

    def answers_without(self, sample, gone) -> None:
        """``/similar`` of each sampled job answers 200 and names none of ``gone``."""
        gone = set(gone)
        for job_id in sample:
            status, body, _, _ = http_get(f"{self.base}/api/jobs/{job_id}/similar")
            assert status == 200, (job_id, body)
            named = {entry["job"]["id"] for entry in body["similarJobs"]}
            assert not named & gone, (job_id, named & gone)


def oids(ids) -> list:
    return [ObjectId(str(i)) for i in ids]


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    with EmbeddingsServer(api_key=KEY) as provider:
        state = Board(tmp_path_factory.mktemp("capture"), provider)
        try:
            state.start()
            yield state
        finally:
            state.product.stop_all()
            state.db.remove()


def test_every_write_of_another_application_reaches_the_queue_and_the_lists(board):
    first = board.write("insert_many", tag="batch", n=2000)["ids"]
    board.wait_embedded(first, "2,000 jobs inserted with insert_many embedded")
    board.wait_listed(first[:200])
    random.seed(7)
    picked = random.sample(first, 650)
    retitle, salary, close, delete, replace = (picked[:200], picked[200:400], picked[400:500], picked[500:600],
                                               picked[600:650])
    items_before = board.queue_items(salary)
    generated = {d["_id"]: d["embedding"]["generatedAt"] for d in board.docs(salary, {"embedding.generatedAt": 1})}
    started = board.jobs.find_one({}, sort=[("embedding.generatedAt", -1)])["embedding"]["generatedAt"]
    misfits = board.write("mixed", retitle=retitle, salary=salary, close=close, delete=delete, replace=replace,
                          misfits=20)["misfits"]

    board.wait_embedded(retitle + replace, "200 retitled and 50 replaced jobs embedded again", after=started)
    gone = close + delete
    board.wait_gone(gone)
    kept = [i for i in first if i not in set(gone)]
    board.wait_listed(random.sample(kept, 200))
    # A salary change: no new queue item, no new embedding.
    assert board.queue_items(salary) == items_before
    now_generated = {d["_id"]: d["embedding"]["generatedAt"] for d in board.docs(salary, {"embedding.generatedAt": 1})}
    assert now_generated == generated
    for job_id in close[:5] + delete[:5]:
        assert http_get(f"{board.base}/api/jobs/{job_id}/similar")[0] == 404
    board.answers_without(random.sample(kept, 30), gone)
    # The misfits: listed with their reasons, never embedded, and no page or answer fails on them.
    reported = wait_until("the 20 misfits reported", lambda: database(board.uri).jobmisfits.count_documents(
        {"_id": {"$in": oids(misfits)}}) == 20, 60, processes=board.processes)
    assert reported and board.jobs.count_documents({"_id": {"$in": oids(misfits)}, "embedding.vector": {
        "$exists": True}}) == 0
    # Both workers rank against every embedded active job (the index size of the Workers page): none of the jobs
    # another worker embedded again is missing from either.
    embedded = board.jobs.count_documents({"status": "active", "embedding.status": "completed"})
    wait_until("both workers' indexes to hold every embedded active job",
               lambda: board.index_sizes() == [embedded, embedded], 240, every=2, processes=board.processes,
               seen=lambda: f"{board.index_sizes()} of {embedded}")
    board.product.run(FLASK + ["create-admin", ADMIN[0]], extra_env={"JOBFLOW_ADMIN_PASSWORD": ADMIN[1]})
    admin = Browser(board.base)
    admin.sign_in(*ADMIN)
    status, page, _ = admin.get("/admin/embeddings")
    assert status == 200 and 'data-misfits="20"' in page and "createdAt is not a date" in page
    for path in ["/", "/api/jobs", "/api/jobs?limit=100", f"/api/jobs/{misfits[0]}", f"/jobs/{misfits[2]}",
                 f"/api/jobs/{misfits[3]}/similar"]:
        assert http_get(board.base + path)[0] < 500, path
    for misfit in misfits[:5]:
        status, page, _ = admin.get(f"/admin/embeddings/jobs/{misfit}")
        assert status == 200 and "This document cannot be used" in page
    capture = board.capture()
    # 2,000 inserts, 200 retitles, 100 closes, 100 deletions, 50 replacements and 20 misfits; the salary changes
    # never reach the product (the stream carries only writes to the text, status and language).
    assert capture["mode"] == "stream" and capture["token"] and capture["events"] >= 2470
    code, text = api("GET", board.base + "/metrics", token=TOKEN, timeout=30)
    assert code == 200 and metric_values(text)["jobflow_job_misfits"] == 20
    assert metric_values(text)['jobflow_capture_state{state="ok"}'] == 1
    code, body = api("GET", board.base + "/api/health/embeddings")
    assert code == 200 and not any("capture" in r for r in body.get("reasons", [])), body


def held_by(board: Board, worker_id: str) -> list:
    return [d["jobId"] for d in database(board.uri).jobqueues.find({"status": "processing", "lockedBy": worker_id},
                                                                   {"jobId": 1})]


def test_the_other_worker_takes_over_when_the_capturing_one_is_killed(board):
    owner = board.capture()["owner"]
    doomed = next(w for w in board.workers if f":{w.pid}:" in owner)
    survivor = next(w for w in board.workers if w is not doomed)
    before = board.provider.embedded
    writer = board.write_in_background("trickle", tag="kill", n=240, rate=60)
    wait_until("80 jobs written", lambda: board.jobs.count_documents({"title": {"$regex": "kill-"}}) >= 80, 60)
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait(10)
    held = held_by(board, owner)
    board.workers = [survivor]
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err[-2000:]
    ids = json.loads(out.strip().splitlines()[-1])["ids"]
    wait_until("the surviving worker to capture", lambda: board.capture().get("owner") not in (None, owner), 60,
               processes=[survivor])
    board.wait_embedded(ids, "every job written around the kill embedded")
    board.wait_listed(ids[-50:])
    # No text embedded twice, except what the killed worker held.
    after = board.provider.embedded
    docs = board.docs(ids, None)
    held_texts = {t for d in board.jobs.find({"_id": {"$in": held}}) for t in embedded_texts(d)}
    twice = [t for d in docs for t in embedded_texts(d) if after[t] - before[t] > 1]
    assert set(twice) <= held_texts, twice[:5]
    board.workers.append(board.product.start("worker", FLASK + ["worker"]))


def test_the_database_killed_and_restarted_mid_stream_loses_nothing(board):
    writer = board.write_in_background("trickle", tag="dbkill", n=180, rate=60, journal=True)
    wait_until("60 jobs written", lambda: board.jobs.count_documents({"title": {"$regex": "dbkill-"}}) >= 60, 60)
    board.db.kill()
    board.db.start()
    out, err = writer.communicate(timeout=180)
    assert writer.returncode == 0, err[-2000:]
    ids = json.loads(out.strip().splitlines()[-1])["ids"]
    assert len(ids) == 180
    assert len(board.docs(ids, {"_id": 1})) == 180, "the database lost a journaled write: not the product's doing"
    board.wait_embedded(ids, "every job written around the database restart embedded")
    board.wait_listed(ids[-50:])


def test_writes_made_while_the_product_was_stopped_are_caught_up(board):
    existing = [str(d["_id"]) for d in board.jobs.find({"status": "active", "title": {"$regex": " batch-"},
                                                        "embedding.status": "completed"}, {"_id": 1}).limit(200)]
    board.stop()
    stopped_at = board.jobs.find_one({}, sort=[("embedding.generatedAt", -1)])["embedding"]["generatedAt"]
    new = board.write("insert_many", tag="down", n=300)["ids"]
    board.write("mixed", retitle=existing[:100], close=existing[100:150], delete=existing[150:200])
    board.start()
    board.wait_embedded(new, "300 jobs inserted while the product was down embedded")
    board.wait_embedded(existing[:100], "100 jobs retitled while it was down embedded again", after=stopped_at)
    board.wait_gone(existing[100:200])


def test_lost_history_is_swept_and_everything_caught_up(board):
    board.stop()
    board.db.stop()
    board.db.args = ["--oplog-max-entries", "10"]      # a database that keeps almost no history
    board.db.start()
    new = board.write("insert_many", tag="lost", n=150)["ids"]
    # The server prunes its history every 1,000 writes, or when told: told here, as a long outage would have it.
    with MongoClient(board.db.base_uri) as client:
        assert client.admin.command({"secantusAdmin.pruneOplog": 1})["pruned"] > 0
    board.start()
    board.wait_embedded(new, "150 jobs written while the history was lost embedded")
    logs = "".join(w.output() for w in board.workers)
    assert "the change history since the stored position is gone" in logs
    assert "capture sweep done" in logs
    # The drain's own writes may prune a 10-entry oplog under the fresh stream again: capture then sweeps again.
    wait_until("the capture's sweep done", lambda: board.capture()["sweep"]["state"] == "done", 120,
               seen=lambda: board.capture().get("sweep"))
    later = board.write("insert_many", tag="after", n=20)["ids"]
    board.wait_embedded(later, "jobs written after the sweep, through the fresh stream")
    board.stop()
    assert_clean_output(*board.product.running, secrets=(KEY, TOKEN, SECRET_KEY))
