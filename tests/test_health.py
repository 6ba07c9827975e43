"""GET /api/health/embeddings: the seed's shape, why it is degraded, 503 fast when the database is down."""
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bson import ObjectId

from jobflow.db import free_port, ping
from jobflow.models import Job, QueueItem, WorkerStatus
from jobflow.timeutil import utcnow


def add_items(status, n):
    QueueItem._get_collection().insert_many([{"jobId": ObjectId(), "taskType": "generate_embedding",
                                              "status": status} for _ in range(n)])


def test_healthy_shape(client):
    current = {"status": "completed", "model": "multilingual-e5-small"}
    Job._get_collection().insert_many([
        {"title": "a", "status": "active", "embedding": current},
        {"title": "b", "status": "active", "embedding": current},
        {"title": "c", "status": "active", "embedding": current},
        {"title": "d", "status": "active"},
        # Closed jobs are not embedded, so coverage leaves them out (embedded or not).
        {"title": "e", "status": "closed"},
        {"title": "f", "status": "closed", "embedding": current}])
    add_items("pending", 2)
    WorkerStatus._get_collection().insert_one({"workerId": "w:1:a", "state": "running", "lastHeartbeat": utcnow()})
    response = client.get("/api/health/embeddings")
    body = response.get_json()
    assert response.status_code == 200 and body["status"] == "healthy" and "reasons" not in body
    assert body["timestamp"].endswith("Z")
    assert body["metrics"] == {"coverage": "75.00%", "coverageOf": "active jobs", "totalJobs": 6, "activeJobs": 4,
                               "jobsWithEmbeddings": 3,
                               "queue": {"pending": 2, "processing": 0, "failed": 0}, "workers": {"active": 1}}


def test_degraded_says_why(client):
    client.application.config["ALERT_THRESHOLD_QUEUE_SIZE"] = 5
    add_items("pending", 6)   # more than the threshold, as for the alert rule
    add_items("failed", 50)
    WorkerStatus._get_collection().insert_one({"workerId": "old", "state": "running",
                                               "lastHeartbeat": utcnow() - timedelta(hours=1)})
    WorkerStatus._get_collection().insert_one({"workerId": "done", "state": "stopped", "lastHeartbeat": utcnow()})
    body = client.get("/api/health/embeddings").get_json()
    assert body["status"] == "degraded" and body["metrics"]["workers"]["active"] == 0
    assert body["metrics"]["coverage"] == "0.00%"
    reasons = " | ".join(body["reasons"])
    assert "no active worker" in reasons and "6 pending items" in reasons and "50 failed items" in reasons


def test_database_down_answers_503_quickly(make_app):
    data_dir = tempfile.mkdtemp(prefix="jobflow-health-")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(port),
                               "--storage-path", str(Path(data_dir) / "data"), "--log-level", "WARNING"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        uri = f"mongodb://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not ping(uri, 300):
            assert server.poll() is None and time.monotonic() < deadline, "test server did not start"
            time.sleep(0.1)
        app = make_app(MONGODB_URI=f"{uri}/health_down")
        client = app.test_client()
        assert client.get("/api/health/embeddings").status_code == 200
        server.terminate()
        server.wait(15)
        started = time.monotonic()
        response = client.get("/api/health/embeddings")
        elapsed = time.monotonic() - started
        assert response.status_code == 503 and elapsed < 3.5, elapsed
        body = response.get_json()
        assert body["status"] == "error" and body["error"]["code"] == "database_unavailable"
        text = response.get_data(as_text=True)
        assert "Traceback" not in text and "127.0.0.1" not in text and str(port) not in text
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_slow_counts_answer_degraded_from_the_newest_sample(client, monkeypatch):
    from pymongo.errors import NetworkTimeout

    from jobflow.models import MetricSample
    from jobflow.web.api import health as health_endpoint

    def too_slow(settings, now=None):
        raise NetworkTimeout("timed out")
    monkeypatch.setattr(health_endpoint, "health", too_slow)
    minute = utcnow().replace(second=0, microsecond=0) - timedelta(minutes=20)
    MetricSample._get_collection().insert_one({"span": "1m", "time": minute, "done": True, "pending": 12000,
                                               "processing": 40, "failed": 3, "jobsTotal": 20000,
                                               "jobsCurrent": 19000, "workersAlive": 2})
    response = client.get("/api/health/embeddings")
    body = response.get_json()
    assert response.status_code == 200 and body["status"] == "degraded"
    assert body["metrics"]["queue"]["pending"] == 12000 and body["metrics"]["coverage"] == "95.00%"
    assert body["metrics"]["countsAsOf"] and "counting took longer" in body["reasons"][0]
