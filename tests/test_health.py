"""GET /api/health/embeddings: the seed's shape, why it is degraded (naming what stops the workers), 503 fast
when the database is down; a dead worker on the Workers page."""
import time
from datetime import timedelta

import pytest

from jobflow.models import Job, WorkerStatus
from jobflow.timeutil import utcnow
from tests.support import KEY
from tests.support.database import DatabaseServer
from tests.support.seeding import add_item, add_items, add_jobs


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


# ----- why the workers do not embed: the states real workers write ----------------------------------------------

def reasons_of(app) -> tuple[str, str]:
    body = app.test_client().get("/api/health/embeddings").get_json()
    return body["status"], " | ".join(body.get("reasons", []))


def test_the_only_worker_paused_by_the_memory_guard_is_named(make_app, server):
    from jobflow.worker.loop import Worker
    app = make_app(EMBEDDING_PROVIDER="openai", OPENAI_API_KEY=KEY, OPENAI_BASE_URL=server.base_url)
    worker = Worker(dict(app.config), memory_probe=lambda: 0.97)
    worker.start(scheduler=False)
    add_jobs(1)
    worker.process_queue()
    status, reasons = reasons_of(app)
    assert status == "degraded" and f"worker {worker.worker_id} is paused: memory guard (memory at 97%" in reasons
    assert "no active worker" not in reasons


def test_the_only_worker_whose_key_is_refused_is_named(make_app, server):
    from jobflow.worker.loop import Worker
    app = make_app(EMBEDDING_PROVIDER="openai", OPENAI_API_KEY="sk-refused-0123456789abcdef",
                   OPENAI_BASE_URL=server.base_url)
    worker = Worker(dict(app.config))
    worker.start(scheduler=False)
    add_jobs(1)
    worker.process_queue()
    status, reasons = reasons_of(app)
    assert status == "degraded" and f"worker {worker.worker_id} cannot embed: the provider refused the API key" in reasons
    assert "sk-refused" not in reasons


@pytest.mark.parametrize("switch", ["rollback", "setting"])
def test_workers_switched_off_are_not_taken_for_a_missing_heartbeat(make_app, server, switch):
    from jobflow.jobs import rollback
    from jobflow.worker.loop import Worker
    app = make_app(EMBEDDING_PROVIDER="openai", OPENAI_API_KEY=KEY, OPENAI_BASE_URL=server.base_url,
                   EMBEDDING_WORKER_ENABLED=switch != "setting")
    worker = Worker(dict(app.config))
    worker.start(scheduler=False)
    if switch == "rollback":
        rollback.set_level(1, by="test")
    try:
        worker.process_queue()
        status, reasons = reasons_of(app)
    finally:
        rollback.set_level(0)
    expected = "workers are switched off (rollback level 1" if switch == "rollback" else \
        "workers are switched off (EMBEDDING_WORKER_ENABLED is false)"
    assert status == "degraded" and expected in reasons and "no active worker" not in reasons and "heartbeat" not in reasons


def test_a_dead_worker_is_shown_dead_with_the_items_it_holds(client, auth_headers, sign_in):
    """Workers page and admin API: a worker past WORKER_DEAD_THRESHOLD is dead, whatever it last said, never idle."""
    from jobflow.ops.workers import worker_rows
    WorkerStatus._get_collection().insert_one({"workerId": "gone:7:abc", "host": "gone", "pid": 7, "state": "running",
                                               "lastHeartbeat": utcnow() - timedelta(minutes=15), "currentBatch": {}})
    add_item(status="processing", lockedBy="gone:7:abc", lockedAt=utcnow())
    add_item(status="processing", lockedBy="gone:7:abc", lockedAt=utcnow())
    row = next(r for r in worker_rows(client.application.config) if r["workerId"] == "gone:7:abc")
    assert (row["state"], row["level"], row["held"], row["reportedState"]) == ("dead", "dead", 2, "running")
    assert row["reason"] == "no heartbeat for 15 min"
    api = client.get("/api/admin/embeddings/workers", headers=auth_headers).get_json()
    assert [(w["state"], w["held"]) for w in api["workers"]] == [("dead", 2)] and api["deadHolding"] == 2
    sign_in("viewer")
    html = client.get("/admin/embeddings/workers").get_data(as_text=True)
    row_html = html[html.index("gone:7:abc"):html.index("</tr>", html.index("gone:7:abc"))]
    assert ">dead<" in row_html and "holds 2 items" in row_html and "idle" not in row_html
