"""The admin JSON API: Bearer token or an admin session with CSRF; the same functions as the pages."""
from datetime import timedelta

import pytest

from jobflow.models import AuditEntry, QueueItem, WorkerStatus
from jobflow.timeutil import utcnow
from tests.support.seeding import add_items

pytestmark = pytest.mark.usefixtures("fast_hashing")


ENDPOINTS = [("get", "/api/admin/embeddings/status"), ("get", "/api/admin/embeddings/queue"),
             ("get", "/api/admin/embeddings/workers"), ("post", "/api/admin/embeddings/recompute-all"),
             ("post", "/api/admin/embeddings/retry-failed"), ("post", "/api/admin/embeddings/clear-old-queue")]


@pytest.mark.parametrize("method,path", ENDPOINTS)
def test_refused_without_the_token(client, method, path):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dGVzdC10b2tlbg=="}):
        response = getattr(client, method)(path, headers=headers)
        assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_reads_with_the_token(client, auth_headers):
    add_items(2, "failed", "boom")
    WorkerStatus._get_collection().insert_one({"workerId": "w:1:a", "state": "running", "lastHeartbeat": utcnow()})
    status = client.get("/api/admin/embeddings/status", headers=auth_headers).get_json()
    assert status["queue"] == {"pending": 0, "processing": 0, "failed": 2}
    assert status["workers"]["alive"] == 1 and status["coverage"]["percent"] == 0.0
    queue = client.get("/api/admin/embeddings/queue?status=failed&limit=1", headers=auth_headers).get_json()
    assert queue["count"] == 1 and queue["items"][0]["status"] == "failed" and queue["counts"]["failed"] == 2
    assert queue["next"].startswith("/api/admin/embeddings/queue?before=")
    second = client.get(queue["next"], headers=auth_headers).get_json()
    assert second["count"] == 1 and second["items"][0]["id"] != queue["items"][0]["id"] and not second["next"]
    assert client.get("/api/admin/embeddings/queue?limit=0", headers=auth_headers).status_code == 400
    workers = client.get("/api/admin/embeddings/workers", headers=auth_headers).get_json()
    assert workers["alive"] == 1 and workers["workers"][0]["level"] == "ok"


def test_actions_with_the_token(client, auth_headers):
    add_items(3, "failed", "boom")
    dry = client.post("/api/admin/embeddings/retry-failed", json={"dryRun": True}, headers=auth_headers).get_json()
    assert dry["count"] == 3 and dry["action"] == "retry-failed" and "estimatedSeconds" in dry
    assert QueueItem.objects(status="failed").count() == 3
    done = client.post("/api/admin/embeddings/retry-failed", headers=auth_headers)   # no body, like the seed's curl
    assert done.status_code == 200 and done.get_json()["count"] == 3
    entry = AuditEntry.objects.get(action="retry-failed")
    assert (entry.actor, entry.via, entry.count) == ("api-token", "api", 3)
    assert client.post("/api/admin/embeddings/recompute-all", headers=auth_headers).get_json()["action"] == \
        "recompute-all"
    bad = client.post("/api/admin/embeddings/clear-old-queue", json={"days": "seven"}, headers=auth_headers)
    assert bad.status_code == 400 and bad.get_json()["error"]["fields"]["days"]
    cleared = client.post("/api/admin/embeddings/clear-old-queue", json={"days": 0}, headers=auth_headers)
    assert cleared.status_code == 200


def test_session_access(client, sign_in):
    token = sign_in("admin")
    add_items(1, "failed", "boom")
    assert client.get("/api/admin/embeddings/status").status_code == 200
    no_csrf = client.post("/api/admin/embeddings/retry-failed")
    assert no_csrf.status_code == 400 and no_csrf.get_json()["error"]["code"] == "csrf_failed"
    ok = client.post("/api/admin/embeddings/retry-failed", headers={"X-CSRFToken": token})
    assert ok.status_code == 200 and ok.get_json()["count"] == 1
    assert AuditEntry.objects.get(action="retry-failed").actor == "admin@example.com"


def test_viewer_session_reads_but_cannot_act(client, sign_in):
    token = sign_in("viewer")
    add_items(1, "failed", "boom")
    assert client.get("/api/admin/embeddings/queue").status_code == 200
    refused = client.post("/api/admin/embeddings/retry-failed", headers={"X-CSRFToken": token})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "forbidden"
    assert QueueItem.objects(status="failed").count() == 1


def test_old_items_only_cleared(client, auth_headers):
    add_items(1, status="completed")
    QueueItem._get_collection().update_many({}, {"$set": {"finishedAt": utcnow() - timedelta(days=10)}})
    add_items(1, status="completed")
    dry = client.post("/api/admin/embeddings/clear-old-queue", json={"dryRun": True}, headers=auth_headers)
    assert dry.get_json()["count"] == 1
    done = client.post("/api/admin/embeddings/clear-old-queue", json={}, headers=auth_headers).get_json()
    assert done["count"] == 1 and QueueItem.objects.count() == 1
