"""Dashboard actions: confirm with impact first, then act through jobflow.jobs.queue, always audited."""
import re
from datetime import timedelta

import pytest

from jobflow.models import AuditEntry, Job, QueueItem, WorkerStatus
from jobflow.ops import actions
from jobflow.ops.failures import failure_groups
from jobflow.timeutil import utcnow
from tests.support.seeding import add_item

pytestmark = pytest.mark.usefixtures("fast_hashing")


def failed_item(**fields):
    """A queue item that failed with "boom" unless ``fields`` say otherwise."""
    return add_item(**{"status": "failed", "error": "boom", **fields})


def item_status(item_id):
    return QueueItem._get_collection().find_one({"_id": item_id})["status"]


def test_retry_one_item_confirms_then_acts(admin):
    item = failed_item()
    ask = admin.post(f"/admin/embeddings/queue/{item}/retry", data={"csrf_token": admin.token})
    page = ask.get_data(as_text=True)
    assert ask.status_code == 200 and "Retry queue item" in page and 'name="confirm" value="yes"' in page
    assert item_status(item) == "failed"                       # nothing happened yet
    done = admin.post(f"/admin/embeddings/queue/{item}/retry", data={"csrf_token": admin.token, "confirm": "yes"},
                      follow_redirects=True)
    assert "The item is pending again." in done.get_data(as_text=True)
    assert item_status(item) == "pending"
    entry = AuditEntry.objects.get(action="retry-item")
    assert (entry.actor, entry.via, entry.target, entry.count) == ("admin@example.com", "page", str(item), 1)
    # Retrying it again is refused: it is no longer failed.
    again = admin.post(f"/admin/embeddings/queue/{item}/retry", data={"csrf_token": admin.token, "confirm": "yes"},
                       follow_redirects=True)
    assert "only failed items can be retried" in again.get_data(as_text=True)


def test_action_without_csrf_is_refused(admin):
    item = failed_item()
    response = admin.post(f"/admin/embeddings/queue/{item}/retry", data={"confirm": "yes"})
    assert response.status_code == 400 and "security token" in response.get_data(as_text=True)
    assert item_status(item) == "failed" and not AuditEntry.objects(action="retry-item").count()


def test_discard_item(admin):
    item = failed_item(status="pending", error=None)
    admin.post(f"/admin/embeddings/queue/{item}/discard", data={"csrf_token": admin.token, "confirm": "yes"})
    doc = QueueItem._get_collection().find_one({"_id": item})
    assert doc["status"] == "skipped" and doc["lastError"] == "discarded by admin@example.com" and doc["expiresAt"]
    processing = failed_item(status="processing", lockedBy="w1")
    with pytest.raises(actions.ActionRefused, match="only pending or failed"):
        actions.discard_item(actions.Actor("t", "page"), str(processing), admin.application.config)


def test_retry_matching_filter_shows_impact(admin):
    target = Job._get_collection().insert_one({"title": "Nurse", "status": "active"}).inserted_id
    mine = failed_item(job_id=target)
    other = failed_item()
    ask = admin.post("/admin/embeddings/queue/retry-matching", data={"csrf_token": admin.token, "q": "nurse",
                                                                     "status": "failed"})
    assert re.search(r'class="impact-count">1<', ask.get_data(as_text=True))
    admin.post("/admin/embeddings/queue/retry-matching", data={"csrf_token": admin.token, "q": "nurse",
                                                               "status": "failed", "confirm": "yes"})
    assert (item_status(mine), item_status(other)) == ("pending", "failed")


def test_bulk_retry_failed_shows_count_and_duration(admin):
    for _ in range(30):
        failed_item()
    for _ in range(15):   # 15 completed in the last 15 minutes: 1 item a minute
        failed_item(status="completed", error=None)
    page = admin.post("/admin/embeddings/actions/retry-failed", data={"csrf_token": admin.token}).get_data(
        as_text=True)
    assert 'class="impact-count">30<' in page and "about 30 min" in page and "1.0 items a minute" in page
    admin.post("/admin/embeddings/actions/retry-failed", data={"csrf_token": admin.token, "confirm": "yes"})
    assert QueueItem.objects(status="failed").count() == 0
    assert AuditEntry.objects.get(action="retry-failed").count == 30


def test_retry_a_failure_group(admin):
    for n in (10, 20, 30):
        failed_item(error=f"timeout after {n} ms")
    keep = failed_item(error="invalid vector")
    signature = failure_groups()[0]["signature"]
    ask = admin.post("/admin/embeddings/failures/retry", data={"csrf_token": admin.token, "signature": signature})
    assert 'class="impact-count">3<' in ask.get_data(as_text=True)
    admin.post("/admin/embeddings/failures/retry", data={"csrf_token": admin.token, "signature": signature,
                                                         "confirm": "yes"})
    assert QueueItem.objects(status="pending").count() == 3 and item_status(keep) == "failed"


def test_release_a_dead_workers_items(admin):
    now = utcnow()
    for worker_id, age in (("dead:1:a", 3600), ("live:2:b", 5)):
        WorkerStatus._get_collection().insert_one({"workerId": worker_id, "state": "running",
                                                   "lastHeartbeat": now - timedelta(seconds=age)})
        for _ in range(2):
            failed_item(status="processing", error=None, lockedBy=worker_id, lockedAt=now)
    ask = admin.post("/admin/embeddings/workers/dead:1:a/release", data={"csrf_token": admin.token})
    assert 'class="impact-count">2<' in ask.get_data(as_text=True)
    admin.post("/admin/embeddings/workers/dead:1:a/release", data={"csrf_token": admin.token, "confirm": "yes"})
    assert QueueItem.objects(status="pending").count() == 2
    refused = admin.post("/admin/embeddings/workers/live:2:b/release",
                         data={"csrf_token": admin.token, "confirm": "yes"}, follow_redirects=True)
    assert "is alive" in refused.get_data(as_text=True)
    assert QueueItem.objects(status="processing", lockedBy="live:2:b").count() == 2


def test_requeue_job_and_recompute_and_clear(admin):
    job = Job._get_collection().insert_one({"title": "Chef", "status": "active"}).inserted_id
    admin.post(f"/admin/embeddings/jobs/{job}/requeue", data={"csrf_token": admin.token, "confirm": "yes"})
    item = QueueItem.objects.get(jobId=job)
    assert item.status == "pending" and item.metadata["source"] == "admin" and item.priority == 10

    admin.post("/admin/embeddings/actions/recompute-all", data={"csrf_token": admin.token, "confirm": "yes"})
    from jobflow.ops import recompute
    assert recompute.state()["requestedAt"]

    old = failed_item(status="completed", error=None, finishedAt=utcnow() - timedelta(days=30))
    recent = failed_item(status="completed", error=None)
    ask = admin.post("/admin/embeddings/actions/clear-old-queue", data={"csrf_token": admin.token, "days": 7})
    assert 'class="impact-count">1<' in ask.get_data(as_text=True) and "runs at once" in ask.get_data(as_text=True)
    admin.post("/admin/embeddings/actions/clear-old-queue", data={"csrf_token": admin.token, "days": 7,
                                                                  "confirm": "yes"})
    assert not QueueItem.objects(id=old).count() and QueueItem.objects(id=recent).count()
    assert {e.action for e in AuditEntry.objects} >= {"requeue-job", "recompute-all", "clear-old-queue"}
    audit = admin.get("/admin/embeddings/audit").get_data(as_text=True)
    assert "clear-old-queue" in audit and "admin@example.com" in audit
