"""The dashboard in Chromium: sign in, read the overview, retry a failed item, roles, CSRF, live refresh."""
import re

import pytest
from playwright.sync_api import expect

from jobflow.models import Job, QueueItem, WorkerStatus
from jobflow.timeutil import utcnow
from tests.support.seeding import add_failed
from tests.support.web import sign_in_page

pytestmark = pytest.mark.browser


def test_sign_in_and_read_the_overview(page, live_app):
    add_failed()
    WorkerStatus._get_collection().insert_one({"workerId": "web-1:101:aaaaaa", "host": "web-1", "pid": 101,
                                               "state": "running", "lastHeartbeat": utcnow()})
    page.goto("/admin/embeddings")
    assert "/login" in page.url                                  # not signed in yet
    sign_in_page(page, "admin@example.com", "correct horse")
    assert page.locator("h1").inner_text() == "Embeddings overview"
    assert page.locator("[data-card=failed] .value").inner_text() == "1"
    assert page.locator("[data-card=workers] .value").inner_text() == "1"
    assert "upstream timeout" in page.locator("#region-errors").inner_text()
    # Live refresh: a new failure shows up without reloading the page.
    page.evaluate("window.stillTheSamePage = true")
    add_failed("Data Analyst", "invalid vector: norm is zero")
    expect(page.locator("[data-card=failed] .value")).to_have_text("2")
    assert page.evaluate("window.stillTheSamePage") is True
    assert "live" in page.locator("#live-status").inner_text()


def test_retry_a_failed_item_and_see_it_pending(page, live_app, shot):
    item_id = add_failed()
    sign_in_page(page, "admin@example.com", "correct horse")
    page.goto("/admin/embeddings/queue?status=failed")
    page.click(f"a[href='/admin/embeddings/queue/{item_id}']")
    assert page.locator(".item-state .badge").inner_text() == "failed"
    page.click("button:has-text('Retry…')")
    assert page.locator(".impact-count").inner_text() == "1"    # the confirmation shows the impact first
    shot(page, "confirm")
    page.click("button:has-text('Yes, retry')")
    page.wait_for_url(re.compile(rf"/admin/embeddings/queue/{item_id}$"))
    assert "The item is pending again." in page.locator(".flash").inner_text()
    assert page.locator(".item-state .badge").inner_text() == "pending"
    assert QueueItem._get_collection().find_one({"_id": item_id})["status"] == "pending"


def test_a_viewer_cannot_act(page, live_app):
    item_id = add_failed()
    sign_in_page(page, "viewer@example.com", "viewer password", role="viewer")
    page.goto(f"/admin/embeddings/queue/{item_id}")
    assert page.locator("button:has-text('Retry…')").count() == 0
    page.goto("/admin/embeddings")
    assert page.locator("form[action*='/actions/']").count() == 0
    # Even a hand-made POST with a valid CSRF token is refused by the server.
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    status = page.evaluate("""async ([url, token]) => {
        const body = new URLSearchParams({csrf_token: token, confirm: "yes"});
        const response = await fetch(url, {method: "POST", body});
        return response.status;
    }""", [f"/admin/embeddings/queue/{item_id}/retry", token])
    assert status == 403
    assert QueueItem._get_collection().find_one({"_id": item_id})["status"] == "failed"


def test_a_post_without_csrf_is_refused(page, live_app):
    item_id = add_failed()
    sign_in_page(page, "admin@example.com", "correct horse")
    response = page.request.post(f"/admin/embeddings/queue/{item_id}/retry", form={"confirm": "yes"})
    assert response.status == 400
    api = page.request.post("/api/admin/embeddings/retry-failed")            # session, no X-CSRFToken
    assert api.status == 400 and api.json()["error"]["code"] == "csrf_failed"
    assert QueueItem._get_collection().find_one({"_id": item_id})["status"] == "failed"


def test_screenshots_of_every_page(page, live_app, shot):
    """One screenshot of each page with realistic data, for a look (they go to /tmp/jobflow-shots/)."""
    from benchmarks.dashboard_bench import seed
    seed(queue_items=1500, jobs=300, samples=True)
    page.goto("/login")
    shot(page, "login")
    sign_in_page(page, "admin@example.com", "correct horse")
    job = Job._get_collection().find_one({"embedding.status": "completed"}, {"_id": 1, "title": 1})
    Job._get_collection().update_one({"_id": job["_id"]}, {"$set": {"similarJobs": [
        {"jobId": other["_id"], "score": 0.91 - i * 0.04}
        for i, other in enumerate(Job._get_collection().find({"_id": {"$ne": job["_id"]}}, {"_id": 1}).limit(6))]}})
    item = QueueItem._get_collection().find_one({"status": "failed"}, {"_id": 1})
    from jobflow.models import Alert
    Alert(key="queue", status="open", severity="warning", title="Embedding queue is backing up",
          summary="172 items pending (alert above 100)", page="/admin/embeddings/queue",
          figures={"pending": 172, "processing": 9, "alert above": 100}, notifications=1).save()
    pages = {"overview": "/admin/embeddings", "overview-7d": "/admin/embeddings?range=7d",
             "queue": "/admin/embeddings/queue", "queue-failed": "/admin/embeddings/queue?status=failed",
             "queue-item": f"/admin/embeddings/queue/{item['_id']}", "workers": "/admin/embeddings/workers",
             "failures": "/admin/embeddings/failures", "jobs": f"/admin/embeddings/jobs?q={job['title'].split()[0]}",
             "job": f"/admin/embeddings/jobs/{job['_id']}", "alerts": "/admin/embeddings/alerts",
             "settings": "/admin/embeddings/settings"}
    for name, path in pages.items():
        response = page.goto(path)
        assert response.status == 200, path
        shot(page, name)
    page.goto("/admin/embeddings")
    page.click("form[action$='/actions/retry-failed'] button")
    shot(page, "confirm-bulk")
    assert int(page.locator(".impact-count").inner_text().replace(",", "")) > 0
    page.goto("/admin/embeddings/audit")
    shot(page, "audit")
