"""gunicorn (gunicorn.conf.py) and the worker as separate processes on the embedded database."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from pymongo import MongoClient

from jobflow.db import free_port, ping
from tests.support.openai_server import EmbeddingsServer

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

JOBS = [("Backend Developer (Python)", "Software Development", "Build Flask APIs and MongoDB services."),
        ("Python Backend Engineer", "Software Development", "Flask APIs, MongoDB, Docker and AWS."),
        ("Registered Nurse", "Healthcare", "Night shifts in the emergency department."),
        ("Emergency Nurse", "Healthcare", "Emergency department nursing, night shifts."),
        ("Hotel Receptionist", "Hospitality & Tourism", "Front desk, check-in and guest care.")]


def call(method, url, body=None, token=None):
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read() or b"null")


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_gunicorn_and_worker_processes_end_to_end(tmp_path):
    port = free_port()
    with EmbeddingsServer(dimensions=1536) as provider:
        env = {**os.environ, "PORT": str(port), "JOBFLOW_INSTANCE_PATH": str(tmp_path), "ADMIN_API_TOKEN": "deploy-token-0123456789",
               "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": "sk-test-loopback", "OPENAI_BASE_URL": provider.base_url,
               "OPENAI_EMBEDDING_MODEL": "text-embedding-3-small", "EMBEDDING_WORKER_INTERVAL": "300",
               "WORKER_HEARTBEAT_INTERVAL": "1000", "WORKER_DEAD_THRESHOLD": "5000", "DEMO_DATA": "false",
               "SIMILARITY_MIN_SCORE": "0.0", "WEB_CONCURRENCY": "2"}
        env.pop("MONGODB_URI", None)
        web = subprocess.Popen([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        worker = None
        try:
            wait_for(lambda: call("GET", f"http://127.0.0.1:{port}/api/jobs")[0] == 200, 60, "gunicorn")
            state = json.loads((tmp_path / "secantus.json").read_text())
            auth = json.loads((tmp_path / "secantus.auth").read_text())      # the embedded database's password
            db_uri = f"mongodb://{auth['user']}:{auth['password']}@127.0.0.1:{state['port']}/jobflow?authSource=admin"
            worker = subprocess.Popen([str(BIN / "flask"), "--app", "app", "worker"], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            ids = [call("POST", f"http://127.0.0.1:{port}/api/jobs",
                        {"title": t, "category": c, "description": d, "location": "Tirana"}, "deploy-token-0123456789")[1]["id"]
                   for t, c, d in JOBS]

            def all_listed():
                return all(call("GET", f"http://127.0.0.1:{port}/api/jobs/{i}/similar")[1]["cached"] for i in ids)
            try:
                wait_for(all_listed, 60, "similar lists")
            except AssertionError:
                worker.kill()
                raise AssertionError("no lists; worker said:\n" + worker.communicate()[0][-3000:]) from None
            nurse = call("GET", f"http://127.0.0.1:{port}/api/jobs/{ids[2]}/similar")[1]
            assert nurse["similarJobs"][0]["job"]["id"] == ids[3]
            worker.send_signal(signal.SIGTERM)
            worker_out, _ = worker.communicate(timeout=40)
            assert worker.returncode == 0, worker_out[-2000:]
            assert "stopped" in worker_out and "Traceback" not in worker_out
            client = MongoClient(db_uri)
            db = client.jobflow
            assert db.jobqueues.count_documents({"status": "processing"}) == 0
            assert db.jobqueues.count_documents({"status": "completed"}) == len(ids)
            assert db.workerstatuses.find_one()["state"] == "stopped"
            client.close()
        finally:
            if worker and worker.poll() is None:
                worker.kill()
            web.send_signal(signal.SIGTERM)
            web_out, _ = web.communicate(timeout=40)
        assert web.returncode == 0, web_out[-2000:]
        assert "Traceback" not in web_out
        assert not ping(db_uri, 300)  # the master stopped the embedded database it started
