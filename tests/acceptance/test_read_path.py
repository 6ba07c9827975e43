"""The read path, outside in: gunicorn (two processes, as gunicorn.conf.py runs them) and one worker, on a SecantusDB
server of the module's own so that it can be frozen. Answers come from each process's memory: closed jobs leave
every answer of both processes, stored lists keep being served while the database is stopped (marked stale), and a
job whose text changed gets the fallback until its new list exists.
"""
from __future__ import annotations

import os
import signal

import pytest
from bson import ObjectId

from jobflow.db import free_port
from tests.support.database import DatabaseServer, database
from tests.support.openai_server import EmbeddingsServer
from tests.support.processes import assert_clean_output
from tests.support.waiting import wait_until
from tests.support.web import api, http_get

from .conftest import FLASK, GUNICORN, Product

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

KEY = "sk-test-acceptance-readpath-8c1f"
TOKEN = "acc-readpath-token-5e2a77d1"
SECRET_KEY = "acc-readpath-secret-93b1c0-4d7e2f5a6b8c"
JOBS = 90
ROLES = [("Nurse", "Health"), ("Python Developer", "Software"), ("Truck Driver", "Logistics")]
CITIES = ["Tirana", "Durres", "Shkoder"]
ASKS = 16              # answers asked per check, each on a new connection: both processes answer some of them
STALE = "X-JobFlow-Stale"


class Site:
    def __init__(self, folder, provider):
        self.db = DatabaseServer(folder / "db")
        self.db.start()
        self.uri = self.db.uri("board")
        self.base = f"http://127.0.0.1:{free_port()}"
        self.product = Product(folder / "jobflow")
        self.product.write_env({
            "MONGODB_URI": self.uri, "PORT": self.base.rsplit(":", 1)[1], "HOST": "127.0.0.1", "WEB_CONCURRENCY": 2,
            "DEMO_DATA": "false", "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": provider.base_url, "ADMIN_API_TOKEN": TOKEN, "SECRET_KEY": SECRET_KEY,
            "SIMILARITY_MIN_SCORE": "0.0", "EMBEDDING_WORKER_INTERVAL": 300, "WORKER_HEARTBEAT_INTERVAL": 1000})
        self.jobs = database(self.uri).jobs
        self.web = self.product.start("gunicorn", GUNICORN)
        self.worker = self.product.start("worker", FLASK + ["worker"])

    def answers(self, path: str) -> list:
        return [http_get(self.base + path) for _ in range(ASKS)]

    def listed(self, job_id) -> bool:
        return all(status == 200 and body["cached"] and body["count"] == 10 for status, body, _, _ in
                   self.answers(f"/api/jobs/{job_id}/similar"))

    def gone_everywhere(self, gone: str, holders: list) -> bool:
        """``gone`` answers 404 and is in no answer of ``holders``, in every one of ASKS answers each."""
        if any(status != 404 for status, *_ in self.answers(f"/api/jobs/{gone}/similar") + self.answers(
                f"/api/jobs/{gone}")):
            return False
        return not any(gone in {e["job"]["id"] for e in body["similarJobs"]}
                       for holder in holders for _, body, _, _ in self.answers(f"/api/jobs/{holder}/similar"))

    def holders_of(self, job_id: str) -> list:
        return [str(d["_id"]) for d in self.jobs.find({"status": "active", "similarJobs.jobId": ObjectId(job_id)},
                                                      {"_id": 1}).limit(3)]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with EmbeddingsServer(api_key=KEY) as provider:
        state = Site(tmp_path_factory.mktemp("read-path"), provider)
        try:
            wait_until("gunicorn to answer", lambda: http_get(state.base + "/api/jobs")[0] == 200, 90,
                       processes=[state.web, state.worker])
            state.ids = []
            for n in range(JOBS):
                role, category = ROLES[n % len(ROLES)]
                status, body = api("POST", state.base + "/api/jobs", {
                    "title": f"{role} {n}", "company": f"Company {n % 7}", "category": category,
                    "location": CITIES[(n // 3) % 3], "description": f"{role} wanted, team {n % 5}, shift {n % 4}."},
                    token=TOKEN)
                assert status == 201, body
                state.ids.append(body["id"])
            wait_until("every job's list", lambda: state.jobs.count_documents({"similarJobs.9": {"$exists": True}})
                       == JOBS, 300, every=1, processes=[state.web, state.worker])
            # The drain's end fits the language correction and then writes every list again: a settled board.
            corrections = state.jobs.database.similaritycorrections
            wait_until("the drain-end language fit's lists written", lambda: corrections.find_one(
                {"version": {"$gte": 1}, "$expr": {"$eq": ["$listsVersion", "$version"]}}), 120, every=1,
                processes=[state.web, state.worker], seen=lambda: list(corrections.find({}, {"version": 1,
                                                                                            "listsVersion": 1})))
            yield state
        finally:
            if state.db.process is not None and state.db.process.poll() is None:
                os.kill(state.db.process.pid, signal.SIGCONT)
            state.product.stop_all()
            state.db.remove()


def test_a_job_closed_through_the_api_leaves_every_answer_of_both_processes(site):
    closed = site.ids[4]
    holders = site.holders_of(closed)
    assert holders and site.listed(holders[0])
    assert api("PATCH", f"{site.base}/api/jobs/{closed}", {"status": "closed"}, token=TOKEN)[0] == 200
    wait_until("the job closed through the API out of every answer", lambda: site.gone_everywhere(closed, holders),
               60, processes=[site.web])


def test_a_job_closed_or_deleted_by_another_writer_leaves_every_answer(site):
    closed, deleted = site.ids[7], site.ids[8]
    holders = site.holders_of(closed) + site.holders_of(deleted)
    site.jobs.update_one({"_id": ObjectId(closed)}, {"$set": {"status": "closed"}})
    site.jobs.delete_one({"_id": ObjectId(deleted)})
    wait_until("the jobs closed and deleted in the database out of every answer",
               lambda: site.gone_everywhere(closed, holders) and site.gone_everywhere(deleted, holders), 60,
               processes=[site.web])


def test_stored_lists_are_served_while_the_database_is_frozen(site):
    sample = site.ids[20:30]
    os.kill(site.db.process.pid, signal.SIGSTOP)
    try:
        def served_alike():
            """Each sample job's answer, when all ASKS answers (from both processes) are the same; else None."""
            seen = {}
            for job_id in sample:
                answers = [(status, body) for status, body, _, _ in site.answers(f"/api/jobs/{job_id}/similar")]
                if any(answer != answers[0] for answer in answers) or answers[0][0] != 200:
                    return None
                seen[job_id] = answers[0][1]
            return seen

        # No write lands while the database is stopped: what both processes serve now is what they hold (a list
        # the worker wrote just before the stop may still be on its way to one of them for a moment).
        before = wait_until("both processes serving the same answers", served_alike, 30, every=1,
                            processes=[site.web])
        assert all(body["cached"] and body["count"] for body in before.values())

        def stale_answers():
            seen = []
            for job_id in sample:
                status, body, seconds, headers = http_get(f"{site.base}/api/jobs/{job_id}/similar", timeout=5)
                assert status == 200 and body == before[job_id], (job_id, status, body)
                seen.append(STALE in headers)
            return all(seen)

        # Every answer is the stored list at once; after a few seconds they also say they may be stale.
        wait_until("answers marked stale while the database is stopped", stale_answers, 60, every=1,
                   processes=[site.web])
        status, body, _, headers = http_get(f"{site.base}/api/jobs/{sample[0]}")
        assert status == 200 and body["title"] and STALE in headers
        status, body, _, _ = http_get(f"{site.base}/api/health/embeddings", timeout=10)
        assert status == 503 and body["error"]["code"] == "database_unavailable"
    finally:
        os.kill(site.db.process.pid, signal.SIGCONT)
    wait_until("answers no longer stale", lambda: not any(STALE in h for *_, h in site.answers(
        f"/api/jobs/{sample[0]}/similar")), 90, every=1, processes=[site.web])
    assert api("GET", f"{site.base}/api/health/embeddings")[0] == 200


def test_a_changed_text_serves_the_fallback_until_its_new_list_exists(site):
    job_id = site.ids[31]
    old = http_get(f"{site.base}/api/jobs/{job_id}/similar")[1]["computedAt"]
    os.kill(site.worker.process.pid, signal.SIGSTOP)     # no new list until we let it
    try:
        status, _ = api("PATCH", f"{site.base}/api/jobs/{job_id}", {"title": "Night Nurse on the Surgical Ward",
                                                                   "description": "Night shifts, patient care."},
                        token=TOKEN)
        assert status == 200

        def fallback_everywhere():
            bodies = [b for s, b, _, _ in site.answers(f"/api/jobs/{job_id}/similar") if s == 200]
            return len(bodies) == ASKS and all(not b["cached"] and b["computedAt"] is None and b["count"] == 10
                                               for b in bodies)

        wait_until("the fallback from both processes", fallback_everywhere, 60, processes=[site.web])
        title = http_get(f"{site.base}/api/jobs/{job_id}")[1]["title"]
        assert title == "Night Nurse on the Surgical Ward"
    finally:
        os.kill(site.worker.process.pid, signal.SIGCONT)
    wait_until("the new list from both processes", lambda: all(
        s == 200 and b["cached"] and b["computedAt"] != old for s, b, _, _ in
        site.answers(f"/api/jobs/{job_id}/similar")), 120, processes=[site.web, site.worker])
    site.product.stop_all()
    assert_clean_output(site.web, site.worker, secrets=(KEY, TOKEN, SECRET_KEY))
