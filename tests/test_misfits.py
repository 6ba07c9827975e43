"""Job documents another application wrote that do not fit never break a page or an API answer."""
from __future__ import annotations

import pytest
from bson import ObjectId

from jobflow.embeddings.text import job_text, text_hash
from jobflow.models import Job
from jobflow.timeutil import utcnow

MISFITS = {
    "wrong type": {"title": 42, "description": ["a", "list"], "company": {"name": "x"}},
    "missing title": {"title": None},
    "created not a date": {"createdAt": "not a date", "updatedAt": 17},
    "garbage embedding": {"embedding": "garbage"},
    "garbage list": {"similarJobs": "garbage", "similarityMetadata": 5},
    "list of junk": {"similarJobs": [1, "x", {"jobId": "nope", "score": "high"}]},
    "status not text": {"status": ["active"]},
}


def good(title: str) -> dict:
    doc = {"title": title, "description": f"{title} wanted.", "status": "active", "createdAt": utcnow(),
           "updatedAt": utcnow()}
    doc["embedding"] = {"status": "completed", "textHash": text_hash(job_text(doc)), "model": "m"}
    return doc


@pytest.mark.parametrize("kind", sorted(MISFITS))
def test_no_page_or_answer_fails_on_a_document_that_does_not_fit(app, admin, auth_headers, kind):
    jobs = Job._get_collection()
    fine = jobs.insert_one(good("Chef")).inserted_id
    bad = jobs.insert_one({**good("Broken"), **MISFITS[kind]}).inserted_id
    # A good job whose list names the misfit.
    jobs.update_one({"_id": fine}, {"$set": {"similarJobs": [{"jobId": bad, "score": 0.9}]}})
    urls = ["/", f"/jobs/{fine}", f"/jobs/{bad}", "/api/jobs", "/api/jobs?status=active", f"/api/jobs/{fine}",
            f"/api/jobs/{bad}", f"/api/jobs/{fine}/similar", f"/api/jobs/{bad}/similar", "/admin/embeddings",
            "/admin/embeddings/jobs", "/admin/embeddings/jobs?q=Broken", f"/admin/embeddings/jobs/{bad}",
            f"/admin/embeddings/jobs/{fine}", "/admin/embeddings/queue", "/api/health/embeddings"]
    for url in urls:
        for headers in ({}, auth_headers):
            response = admin.get(url, headers=headers)
            assert response.status_code < 500, (kind, url, response.status_code, response.get_data(as_text=True)[:500])
    listing = admin.get("/api/jobs", headers=auth_headers).get_json()
    assert str(fine) in [j["id"] for j in listing["jobs"]]


def test_the_api_lists_a_misfit_with_what_it_can_show(client, auth_headers):
    bad = Job._get_collection().insert_one({**good("Broken"), "createdAt": "not a date"}).inserted_id
    body = client.get(f"/api/jobs/{bad}", headers=auth_headers).get_json()
    assert body["id"] == str(bad) and body["title"] == "Broken" and body["createdAt"] is None
    assert isinstance(ObjectId(body["id"]), ObjectId)


def test_a_queued_document_that_does_not_fit_is_skipped_with_its_reason(make_app, server):
    """Queued by the API or a migration before another application spoiled it: the worker skips it, and the batch
    around it is embedded as usual."""
    from jobflow.models import QueueItem
    from jobflow.worker.loop import Worker
    from tests.support.seeding import add_jobs
    app = make_app(EMBEDDING_PROVIDER="openai", OPENAI_API_KEY="sk-test-loopback", OPENAI_BASE_URL=server.base_url,
                   CHANGE_CAPTURE="off")
    with app.app_context():
        fine, spoiled = add_jobs([{"title": "Chef", "description": "Kitchen."}, {"title": "Cook", "description": "Grill."}])
        Job._get_collection().update_one({"_id": spoiled}, {"$set": {"embedding": "garbage"}})
        worker = Worker.from_app(app)
        worker.start(scheduler=False)
        try:
            worker.process_queue()
            worker.flush_lists()
        finally:
            worker.stop(timeout=5)
        items = {d["jobId"]: d for d in QueueItem._get_collection().find({})}
        assert items[fine]["status"] == "completed"
        assert items[spoiled]["status"] == "skipped"
        assert items[spoiled]["lastError"] == "job cannot be used: embedding is not a document"
        assert Job._get_collection().find_one({"_id": spoiled})["embedding"] == "garbage"
