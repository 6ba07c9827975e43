"""Dashboard pages: what they show, escaping, live fragments, filters, keyset pages, grouping, search."""
import re
from datetime import timedelta

import numpy as np
import pytest
from bson import ObjectId

from jobflow.models import Job, WorkerStatus
from jobflow.models.fields import vector_to_bson
from jobflow.ops.failures import failure_groups
from jobflow.ops.overview import overview_data
from jobflow.ops.queue_view import QueueFilter, queue_page
from jobflow.ops.workers import worker_rows
from jobflow.timeutil import utcnow
from tests.support.seeding import add_item

MODEL = "multilingual-e5-small"


pytestmark = pytest.mark.usefixtures("fast_hashing")


def add_job(title="Backend Developer", status="completed", model=MODEL, **extra):
    embedding = None
    if status:
        embedding = {"status": status, "model": model, "tokens": 321, "textHash": "abc", "dimensions": 3,
                     "vector": vector_to_bson(np.ones(3, dtype=np.float32)), "generatedAt": utcnow()}
    doc = {"title": title, "description": "text", "company": "Adriatic Soft", "status": "active",
           "createdAt": utcnow(), "updatedAt": utcnow(), **extra}
    if embedding:
        doc["embedding"] = embedding
    return Job._get_collection().insert_one(doc).inserted_id


def add_worker(worker_id, age_seconds, state="running", **extra):
    WorkerStatus._get_collection().insert_one({
        "workerId": worker_id, "host": worker_id.split(":")[0], "pid": 42, "state": state,
        "lastHeartbeat": utcnow() - timedelta(seconds=age_seconds), "startedAt": utcnow() - timedelta(hours=1),
        "processed": 10, "failed": 1, "memory": {"rss": 300 * 2**20, "fraction": 0.2}, "currentBatch": {}, **extra})


def test_overview_shows_coverage_queue_workers_and_errors(admin):
    for i in range(3):
        add_job(f"Job {i}")
    add_job("Old model job", model="text-embedding-ada-002")
    add_job("Never embedded", status=None)
    add_job("Edited since", status="pending")
    job = add_job("<script>alert(1)</script> Engineer", status="failed")
    add_item(job, "failed", error="provider error 500: upstream timeout after 30000 ms")
    add_item(status="pending")
    add_worker("web-1:1:aaa", 5)
    add_worker("old:2:bbb", 86400)
    html = admin.get("/admin/embeddings").get_data(as_text=True)
    assert "42.9%" in html                       # 3 current of 7 jobs
    assert "text-embedding-ada-002" in html and "old model" in html
    assert "upstream timeout" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'id="region-cards"' in html and "admin.js" in html
    data = overview_data(admin.application.config)
    assert data["queue"].values == {"pending": 1, "processing": 0, "failed": 1}
    assert data["jobs"]["current"] == 3 and data["jobs"]["total"] == 7
    assert data["jobs"]["failed"] == 1 and data["jobs"]["textChanged"] == 1
    assert data["workers"]["alive"] == 1 and data["workers"]["dead"] == 1


def test_live_fragment_has_only_the_regions(admin):
    add_item(status="failed", error="boom")
    html = admin.get("/admin/embeddings?fragment=live").get_data(as_text=True)
    assert "<html" not in html and '<template data-region="cards">' in html
    assert "boom" in html
    for path in ("/admin/embeddings/queue", "/admin/embeddings/workers", "/admin/embeddings/failures"):
        fragment = admin.get(path + "?fragment=live").get_data(as_text=True)
        assert '<template data-region="list">' in fragment and "<nav" not in fragment.split("</template>")[-1]


def test_overview_alerts(admin):
    for _ in range(3):
        add_item(status="failed", error="boom")
    admin.application.config["ALERT_THRESHOLD_FAILURES"] = 2
    html = admin.get("/admin/embeddings").get_data(as_text=True)
    assert "No worker is alive" in html and "3 failures in the last hour" in html
    add_worker("w:1:x", 1, state="degraded", reason="the provider rejected the API key")
    html = admin.get("/admin/embeddings").get_data(as_text=True)
    assert "No worker is alive" not in html and "rejected the API key" in html


def test_queue_filters_search_and_keyset_pages(admin):
    now = utcnow()
    target = add_job("Nurse in Durres")
    for i in range(7):
        add_item(status="failed" if i % 2 else "pending", error="boom" if i % 2 else None,
                 created=now - timedelta(minutes=i), time_id=True)
    for i in range(3):
        add_item(status="completed", created=now - timedelta(days=9, minutes=i), time_id=True)
    mine = add_item(target, "failed", error="mine")
    html = admin.get("/admin/embeddings/queue?status=failed").get_data(as_text=True)
    assert html.count('class="badge failed"') == 4
    by_title = admin.get("/admin/embeddings/queue?q=nurse").get_data(as_text=True)
    assert re.findall(r"/admin/embeddings/queue/([0-9a-f]{24})", by_title) == [str(mine)]
    by_id = admin.get(f"/admin/embeddings/queue?q={target}").get_data(as_text=True)
    assert str(mine)[-8:] in by_id
    # Keyset pages newest first, across the windows (old completed items are nine days back).
    seen, before = [], None
    while True:
        page = queue_page(QueueFilter(), before=before, limit=3, now=now + timedelta(seconds=1))
        seen += [d["_id"] for d in page.items]
        if not page.older:
            break
        before = page.older
    assert len(seen) == 11 and seen == sorted(seen, reverse=True)
    back = queue_page(QueueFilter(), after=str(seen[6]), limit=3)
    assert [d["_id"] for d in back.items] == seen[3:6] and back.newer
    html = admin.get(f"/admin/embeddings/queue?before={seen[2]}").get_data(as_text=True)
    assert "← Newer" in html


def test_queue_item_detail_shows_every_attempt(admin):
    item = add_item(status="failed", error="rate limited")
    html = admin.get(f"/admin/embeddings/queue/{item}").get_data(as_text=True)
    for n in (1, 2, 3):
        assert f"rate limited (attempt {n})" in html
    assert "Retry…" in html and "Discard…" in html
    assert admin.get("/admin/embeddings/queue/not-an-id").status_code == 404


def test_workers_levels_and_folding(admin):
    settings = admin.application.config  # heartbeat 60 s, dead after 180 s
    add_worker("live:1:a", 10)
    add_worker("slow:2:b", 120)
    add_worker("gone:3:c", 900)
    add_worker("done:4:d", 10, state="stopped")
    add_item(status="processing", lockedBy="gone:3:c", lockedAt=utcnow())
    rows = {r["workerId"]: r for r in worker_rows(settings)}
    assert [rows[w]["level"] for w in ("live:1:a", "slow:2:b", "gone:3:c", "done:4:d")] == \
        ["ok", "stale", "dead", "stopped"]
    assert rows["gone:3:c"]["held"] == 1
    html = admin.get("/admin/embeddings/workers").get_data(as_text=True)
    assert "<details" in html and "2 dead or stopped workers" in html and "Give back 1 items…" in html
    assert html.index("live:1:a") < html.index("<details") < html.index("gone:3:c")


def test_failures_grouped_by_signature(admin):
    now = utcnow()
    for n in (1200, 3400, 5600):
        add_item(status="failed", error=f"provider error 500: upstream timeout after {n} ms", finished=now)
    add_item(status="failed", error="provider error 500: upstream timeout after 9 ms",
             finished=now - timedelta(days=2))
    add_item(status="failed", error=f"invalid vector: norm is zero for job {ObjectId()}",
             finished=now - timedelta(hours=3))
    groups = failure_groups(now)
    assert [g["count"] for g in groups] == [4, 1]
    assert groups[0]["signature"] == "provider error <n>: upstream timeout after <n> ms"
    assert (groups[0]["hour"], groups[0]["day"], groups[0]["week"]) == (3, 3, 4)
    assert groups[1]["signature"] == "invalid vector: norm is zero for job <id>"
    html = admin.get("/admin/embeddings/failures").get_data(as_text=True)
    assert "upstream timeout after &lt;n&gt; ms" in html and "Retry 4…" in html


def test_jobs_search_and_detail(admin):
    neighbour = add_job("Python Developer (remote)")
    job = add_job("python backend engineer", similarJobs=[{"jobId": neighbour, "score": 0.8731}],
                  externalId="EXT-7")
    add_item(job, "completed")
    by_prefix = admin.get("/admin/embeddings/jobs?q=PYTHON").get_data(as_text=True)
    assert "Python Developer (remote)" in by_prefix and "python backend engineer" in by_prefix
    by_word = admin.get("/admin/embeddings/jobs?q=developer").get_data(as_text=True)
    assert "Python Developer (remote)" in by_word and "python backend engineer" not in by_word
    assert "No job matches" in admin.get("/admin/embeddings/jobs?q=.*").get_data(as_text=True)  # text, not a pattern
    assert "python backend engineer" in admin.get("/admin/embeddings/jobs?q=EXT-7").get_data(as_text=True)
    assert "python backend engineer" in admin.get(f"/admin/embeddings/jobs?q={job}").get_data(as_text=True)
    detail = admin.get(f"/admin/embeddings/jobs/{job}").get_data(as_text=True)
    assert "0.873" in detail and "Python Developer (remote)" in detail and "current" in detail
    assert "Requeue…" in detail
    assert admin.get(f"/admin/embeddings/jobs/{ObjectId()}").status_code == 404


def test_settings_mask_secrets(admin):
    admin.application.config["OPENAI_API_KEY"] = "sk-test-very-secret-key"
    html = admin.get("/admin/embeddings/settings").get_data(as_text=True)
    assert "QUEUE_MAX_ATTEMPTS" in html and "METRICS_RETENTION_DAYS" in html
    assert "test-token" not in html and "sk-test-very-secret-key" not in html and "test-secret" not in html
    assert "(set)" in html


def test_stored_alerts_lead_and_are_not_repeated(admin):
    from jobflow.models import Alert
    Alert(key="workers", status="open", severity="critical", title="No live embedding worker",
          summary="no worker has ever reported", page="/admin/embeddings/workers").save()
    Alert(key="queue", status="resolved", title="Embedding queue is backing up", summary="300 items pending",
          resolvedAt=utcnow()).save()
    html = admin.get("/admin/embeddings").get_data(as_text=True)
    assert "No live embedding worker" in html and "open since" in html
    assert "No worker is alive" not in html           # the live condition of the same rule is not repeated
    page = admin.get("/admin/embeddings/alerts").get_data(as_text=True)
    assert "No live embedding worker" in page and "Embedding queue is backing up" in page
