"""Other writers, outside in: a job inserted with mongosh (the npm package, ``scripts/mongosh``) into the database of
``python app.py`` gets its list (README quick start), and a board that keeps its jobs in a collection of its own, in
its own shape, is followed through JOBS_SOURCE_COLLECTION, JOBS_FIELD_MAP and JOBS_ACTIVE_STATUSES (README,
"Existing boards"). Every effect is checked through HTTP and the database, with a deadline."""
from __future__ import annotations

import json
import os
import stat
import subprocess

import psutil
import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from jobflow.db import free_port
from tests.support import BIN, ROOT
from tests.support.database import DatabaseServer, database
from tests.support.openai_server import EmbeddingsServer
from tests.support.processes import assert_clean_output
from tests.support.waiting import wait_until
from tests.support.web import api, http_get

from .conftest import APP, Product

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

KEY = "sk-test-acceptance-writers-3c7e"
TOKEN = "acc-writers-token-9e2d4a10"
SECRET_KEY = "acc-writers-secret-6f0b2e-13c9d8a7e4f2"
DEADLINE = 300          # seconds after the last write for every effect to hold (a loaded 2-core machine)
ROLES = ["Nurse", "Python Developer", "Accountant", "Truck Driver", "Chef", "Electrician", "Teacher", "Sales Agent"]


def test_a_job_inserted_with_mongosh_into_make_runs_database_gets_its_list(tmp_path):
    """The README's quick start: ``python app.py`` on its embedded database, then ``scripts/mongosh``; that database
    locked with its generated password, and stopped by its watchdog when python app.py is killed."""
    port = free_port()
    with EmbeddingsServer(api_key=KEY) as provider:
        product = Product(tmp_path / "jobflow")
        product.write_env({"PORT": port, "HOST": "127.0.0.1", "DEMO_DATA": "true", "EMBEDDING_PROVIDER": "openai",
                           "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": provider.base_url, "ADMIN_API_TOKEN": TOKEN,
                           "SECRET_KEY": SECRET_KEY, "SIMILARITY_MIN_SCORE": "0.0"})
        base = f"http://127.0.0.1:{port}"
        try:
            app = product.start("app", APP)
            wait_until("the demo jobs embedded", lambda: (api("GET", base + "/api/health/embeddings")[1] or {})
                       .get("metrics", {}).get("coverage") == "100.00%", 180, processes=[app])
            shell = subprocess.run(
                [str(ROOT / "scripts" / "mongosh"), "--quiet", "--eval",
                 'print(db.jobs.insertOne({title: "Night Nurse on the Mongosh Ward", description: "Night shifts on '
                 'a surgical ward; patient care and handover.", company: "Spitali", status: "active", createdAt: '
                 'new Date(), updatedAt: new Date()}).insertedId.toString())'],
                env={**product.environment(), "JOBFLOW_INSTANCE_PATH": str(product.folder / "instance"),
                     "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
                capture_output=True, text=True, timeout=180)
            assert shell.returncode == 0, shell.stderr[-2000:]
            job_id = shell.stdout.strip().splitlines()[-1]
            body = wait_until("the job's list", lambda: (lambda a: a[0] == 200 and len(a[1]["similarJobs"]) >= 5
                                                          and a[1])(http_get(f"{base}/api/jobs/{job_id}/similar")),
                              DEADLINE, processes=[app])
            assert body["cached"] is True
            status, page, _, _ = http_get(f"{base}/jobs/{job_id}")
            assert status == 200 and "Night Nurse on the Mongosh Ward" in page

            # The database behind it needs the password kept in instance/ (a local user who finds the port gets
            # nothing), and outlives no crash of its only user: ``kill -9`` of python app.py stops it.
            instance = product.folder / "instance"
            assert stat.S_IMODE((instance / "secantus.auth").stat().st_mode) == 0o600
            password = json.loads((instance / "secantus.auth").read_text())["password"]
            state = json.loads((instance / "secantus.json").read_text())
            anonymous = MongoClient(f"mongodb://127.0.0.1:{state['port']}/jobflow", serverSelectionTimeoutMS=5000)
            for attempt in (lambda: anonymous.jobflow.adminusers.find_one(),
                            lambda: anonymous.jobflow.adminusers.insert_one({"email": "intruder@example.com"})):
                with pytest.raises(OperationFailure, match="requires authentication"):
                    attempt()
            app.kill()
            wait_until("the embedded database to stop after python app.py was killed",
                       lambda: not psutil.pid_exists(state["pid"])
                       or psutil.Process(state["pid"]).status() == psutil.STATUS_ZOMBIE, 30)
            assert_clean_output(app, secrets=(KEY, TOKEN, SECRET_KEY, password))
        finally:
            product.stop_all()


def test_a_board_that_keeps_its_jobs_in_its_own_collection_and_shape(tmp_path):
    """README, "Existing boards": ``python app.py`` with JOBS_SOURCE_COLLECTION, JOBS_FIELD_MAP and
    JOBS_ACTIVE_STATUSES; the board writes only its own collection, in its own shape."""
    from datetime import datetime, timezone
    server = DatabaseServer(tmp_path / "db")
    server.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    uri = server.uri("own_shape")
    postings = database(uri).postings
    now = lambda: datetime.now(timezone.utc)

    def posting(n: int) -> dict:
        role = ROLES[n % len(ROLES)]
        return {"headline": f"{role} {n}", "body": f"{role} wanted: team {n % 9}, shift {n % 4}.",
                "employer": {"name": f"Company {n % 7}"}, "place": "Durres", "state": "published",
                "modified": now(), "views": n}

    written_before = [str(i) for i in postings.insert_many([posting(n) for n in range(60)]).inserted_ids]
    with EmbeddingsServer(api_key=KEY) as provider:
        product = Product(tmp_path / "jobflow")
        product.write_env({"MONGODB_URI": uri, "PORT": port, "HOST": "127.0.0.1", "DEMO_DATA": "false",
                           "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": provider.base_url,
                           "ADMIN_API_TOKEN": TOKEN, "SECRET_KEY": SECRET_KEY, "SIMILARITY_MIN_SCORE": "0.0",
                           "JOBS_SOURCE_COLLECTION": "postings", "JOBS_ACTIVE_STATUSES": "published,live",
                           "JOBS_FIELD_MAP": "title=headline,description=body,company=employer.name,location=place,"
                                             "status=state,updatedAt=modified"})
        try:
            app = product.start("app", APP)
            later = [str(i) for i in postings.insert_many([posting(n) for n in range(60, 90)]).inserted_ids]

            def listed(job_id):
                status, body, _, _ = http_get(f"{base}/api/jobs/{job_id}/similar")
                return status == 200 and body["cached"] and len(body["similarJobs"]) == 10 and body

            for job_id in (written_before[0], written_before[-1], later[0], later[-1]):
                wait_until(f"the list of posting {job_id}", lambda: listed(job_id), DEADLINE, processes=[app])
            status, job, _, _ = http_get(f"{base}/api/jobs/{later[0]}")
            assert status == 200 and (job["title"], job["company"], job["location"]) == (
                "Chef 60", "Company 4", "Durres")
            from bson import ObjectId
            archived, deleted = ObjectId(later[1]), ObjectId(later[2])
            postings.update_one({"_id": archived}, {"$set": {"state": "archived", "modified": now()}})
            postings.delete_one({"_id": deleted})
            wait_until("the archived and the deleted posting answered 404",
                       lambda: http_get(f"{base}/api/jobs/{archived}/similar")[0] == 404
                       and http_get(f"{base}/api/jobs/{deleted}/similar")[0] == 404, DEADLINE, processes=[app])
            holding = {"status": "active", "similarJobs.jobId": {"$in": [archived, deleted]}}
            wait_until("both out of every list", lambda: database(uri).jobs.count_documents(holding) == 0, DEADLINE,
                       processes=[app])
            assert postings.count_documents({}) == 89 and postings.find_one({"_id": archived})["state"] == "archived"
            assert "embedding" not in postings.find_one({"_id": archived}), "the board's collection is only read"
            assert app.stop() == 0
            assert "copying every job of the board's collection postings" in app.output()
            assert_clean_output(app, secrets=(KEY, TOKEN, SECRET_KEY))
        finally:
            product.stop_all()
            server.remove()
