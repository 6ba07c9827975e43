"""GET /api/health/embeddings: the seed's shape, why it is degraded, 503 fast when the database is down."""
import time
from datetime import timedelta

from jobflow.models import Job, WorkerStatus
from jobflow.timeutil import utcnow
from tests.support.database import DatabaseServer
from tests.support.seeding import add_items


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
    add_items(2, "pending")
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
    add_items(6, "pending")   # more than the threshold, as for the alert rule
    add_items(50, "failed")
    WorkerStatus._get_collection().insert_one({"workerId": "old", "state": "running",
                                               "lastHeartbeat": utcnow() - timedelta(hours=1)})
    WorkerStatus._get_collection().insert_one({"workerId": "done", "state": "stopped", "lastHeartbeat": utcnow()})
    body = client.get("/api/health/embeddings").get_json()
    assert body["status"] == "degraded" and body["metrics"]["workers"]["active"] == 0
    assert body["metrics"]["coverage"] == "0.00%"
    reasons = " | ".join(body["reasons"])
    assert "no active worker" in reasons and "6 pending items" in reasons and "50 failed items" in reasons


def test_database_down_answers_503_quickly(make_app, tmp_path):
    server = DatabaseServer(tmp_path / "db")
    server.start()
    try:
        app = make_app(MONGODB_URI=server.uri("health_down"))
        client = app.test_client()
        assert client.get("/api/health/embeddings").status_code == 200
        server.stop()
        started = time.monotonic()
        response = client.get("/api/health/embeddings")
        elapsed = time.monotonic() - started
        assert response.status_code == 503 and elapsed < 3.5, elapsed
        body = response.get_json()
        assert body["status"] == "error" and body["error"]["code"] == "database_unavailable"
        text = response.get_data(as_text=True)
        assert "Traceback" not in text and "127.0.0.1" not in text and str(server.port) not in text
    finally:
        server.remove()


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
