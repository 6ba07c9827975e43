"""The jobs JSON API: validation, one error shape, token, enqueue rules."""
import json

from bson import ObjectId

from jobflow.models import Job, QueueItem

JOB = {"title": "Backend Developer (Python)", "description": "Build Flask APIs on MongoDB.",
       "company": "Adriatic Soft", "location": "Tirana", "category": "Software Development"}


def create(client, headers, **fields):
    response = client.post("/api/jobs", json={**JOB, **fields}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def pending_items(job_id):
    return QueueItem.objects(jobId=job_id, status="pending").count()


def assert_error_shape(response, status, code=None):
    assert response.status_code == status
    assert response.is_json
    body = response.get_json()
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str)
    if code:
        assert body["error"]["code"] == code
    assert "Traceback" not in response.get_data(as_text=True)
    return body["error"]


def test_create_queues_one_embedding(client, auth_headers):
    job = create(client, auth_headers)
    assert job["title"] == JOB["title"] and job["status"] == "active"
    items = QueueItem.objects(jobId=job["id"])
    assert [(i.taskType, i.status) for i in items] == [("generate_embedding", "pending")]
    assert client.get(f"/api/jobs/{job['id']}").get_json()["company"] == "Adriatic Soft"


def test_writes_need_the_token(client):
    error = assert_error_shape(client.post("/api/jobs", json=JOB), 401, "unauthorized")
    assert "Bearer" in error["message"]
    assert_error_shape(client.post("/api/jobs", json=JOB, headers={"Authorization": "Bearer wrong"}), 401)
    assert Job.objects.count() == 0


def test_validation_names_each_bad_field(client, auth_headers):
    error = assert_error_shape(client.post("/api/jobs", json={"title": 7, "status": "open", "colour": "red"},
                                           headers=auth_headers), 400, "invalid_input")
    assert set(error["fields"]) == {"title", "description", "status", "colour"}
    assert "required" in error["fields"]["description"]
    too_long = client.post("/api/jobs", json={**JOB, "title": "x" * 301}, headers=auth_headers)
    assert "300" in assert_error_shape(too_long, 400)["fields"]["title"]
    assert Job.objects.count() == 0


def test_body_errors(client, auth_headers):
    assert_error_shape(client.post("/api/jobs", data="{not json", headers={**auth_headers, "Content-Type": "application/json"}), 400)
    assert_error_shape(client.post("/api/jobs", data="title=x", headers={**auth_headers, "Content-Type": "text/plain"}), 415)
    assert_error_shape(client.post("/api/jobs", json=[1, 2], headers=auth_headers), 400)
    huge = json.dumps({**JOB, "description": "x" * (2 * 1024 * 1024)})
    assert_error_shape(client.post("/api/jobs", data=huge, headers={**auth_headers, "Content-Type": "application/json"}), 413)


def test_unknown_and_malformed_ids_are_404(client, auth_headers):
    assert_error_shape(client.get("/api/jobs/000000000000000000000000"), 404, "not_found")
    assert_error_shape(client.get("/api/jobs/not-an-id"), 404, "not_found")
    assert_error_shape(client.patch("/api/jobs/zzz", json={"title": "x"}, headers=auth_headers), 404)
    assert_error_shape(client.delete("/api/jobs/000000000000000000000000", headers=auth_headers), 404)
    assert_error_shape(client.get("/api/nothing-here"), 404)
    assert_error_shape(client.delete("/api/jobs", headers=auth_headers), 405)


def test_editing_text_requeues_once_other_fields_do_not(client, auth_headers):
    job = create(client, auth_headers)
    assert pending_items(job["id"]) == 1
    client.patch(f"/api/jobs/{job['id']}", json={"salaryRange": "900-1200 EUR"}, headers=auth_headers)
    assert QueueItem.objects(jobId=job["id"]).count() == 1
    # Simulate the worker having embedded it: the item is done.
    QueueItem.objects(jobId=job["id"]).update(set__status="completed")
    client.patch(f"/api/jobs/{job['id']}", json={"employmentType": "full-time"}, headers=auth_headers)
    assert pending_items(job["id"]) == 0
    client.patch(f"/api/jobs/{job['id']}", json={"title": "Senior Backend Developer"}, headers=auth_headers)
    client.patch(f"/api/jobs/{job['id']}", json={"description": "Lead the Flask API team."}, headers=auth_headers)
    assert pending_items(job["id"]) == 1  # never two pending for one job


def test_put_replaces_and_requires_all(client, auth_headers):
    job = create(client, auth_headers)
    assert_error_shape(client.put(f"/api/jobs/{job['id']}", json={"title": "Only title"}, headers=auth_headers), 400)
    response = client.put(f"/api/jobs/{job['id']}", json={"title": "Nurse", "description": "Night shifts."},
                          headers=auth_headers)
    body = response.get_json()
    assert response.status_code == 200 and body["title"] == "Nurse" and "company" not in body


def test_close_and_delete_take_the_job_out_of_the_queue(client, auth_headers):
    a, b = create(client, auth_headers), create(client, auth_headers, title="Frontend Developer")
    client.patch(f"/api/jobs/{a['id']}", json={"status": "closed"}, headers=auth_headers)
    assert pending_items(a["id"]) == 0
    from bson import ObjectId

    from jobflow.models import QueueItem
    items = QueueItem._get_collection()
    # A failed item of an earlier text: it goes with the job, or it would count as a failure for an hour.
    items.insert_one({"jobId": ObjectId(b["id"]), "taskType": "generate_embedding", "status": "failed"})
    assert client.delete(f"/api/jobs/{b['id']}", headers=auth_headers).status_code == 204
    assert pending_items(b["id"]) == 0 and items.count_documents({"jobId": ObjectId(b["id"])}) == 0
    assert_error_shape(client.get(f"/api/jobs/{b['id']}"), 404)
    client.patch(f"/api/jobs/{a['id']}", json={"status": "active"}, headers=auth_headers)
    assert pending_items(a["id"]) == 1  # reopened: back in line for its list


def test_list_filters_and_keyset_pagination(client, auth_headers):
    ids = [create(client, auth_headers, title=f"Nurse {i}", category="Healthcare")["id"] for i in range(5)]
    create(client, auth_headers, title="Accountant", category="Finance & Accounting", status="closed")
    body = client.get("/api/jobs?category=Healthcare&limit=2").get_json()
    assert body["total"] == 5 and body["count"] == 2
    seen = [j["id"] for j in body["jobs"]]
    while body["next"]:
        body = client.get(body["next"]).get_json()
        seen += [j["id"] for j in body["jobs"]]
    assert seen == list(reversed(ids))
    assert client.get("/api/jobs?status=closed", headers=auth_headers).get_json()["total"] == 1
    assert client.get("/api/jobs?q=nurse 3").get_json()["jobs"][0]["title"] == "Nurse 3"
    assert client.get("/api/jobs?q=.*").get_json()["total"] == 0  # the query is text, not a pattern
    assert_error_shape(client.get("/api/jobs?limit=1000"), 400)
    assert_error_shape(client.get("/api/jobs?after=bogus"), 400)
    assert "vector" not in json.dumps(client.get(f"/api/jobs/{ids[0]}").get_json())


def test_without_the_token_only_active_jobs_exist(client, auth_headers):
    """Drafts and closed postings, and embedding errors, are for token holders (the board's back office)."""
    draft = create(client, auth_headers, title="Unannounced role", status="draft")
    Job._get_collection().update_one({"_id": ObjectId(draft["id"])}, {"$set": {
        "embedding": {"status": "failed", "error": "the provider refused the key sk-..."}}})
    live = create(client, auth_headers, title="Announced role")
    refused = client.get("/api/jobs?status=draft")
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "unauthorized"
    listed = client.get("/api/jobs").get_json()
    assert [j["id"] for j in listed["jobs"]] == [live["id"]] and listed["total"] == 1
    for path in (f"/api/jobs/{draft['id']}", f"/api/jobs/{draft['id']}/similar", f"/jobs/{draft['id']}"):
        assert client.get(path).status_code == 404, path
    own = client.get(f"/api/jobs/{draft['id']}", headers=auth_headers).get_json()
    assert own["status"] == "draft" and own["embedding"]["error"].startswith("the provider refused")
    assert client.get("/api/jobs?status=draft", headers=auth_headers).get_json()["total"] == 1
    Job._get_collection().update_one({"_id": ObjectId(live["id"])}, {"$set": {
        "embedding": {"status": "failed", "error": "internal detail"}}})
    public = client.get(f"/api/jobs/{live['id']}").get_json()
    assert public["embedding"]["status"] == "failed" and "error" not in public["embedding"]
    assert "internal detail" not in client.get(f"/jobs/{live['id']}").get_data(as_text=True)


def test_token_answers_are_private_and_vary_by_authorization(client, auth_headers):
    """A shared cache must never hand a token holder's answer (a draft's) to anonymous callers."""
    draft = create(client, auth_headers, status="draft")["id"]
    active = create(client, auth_headers, title="Frontend Developer")["id"]
    for path in (f"/api/jobs/{draft}/similar", f"/api/jobs/{draft}", "/api/jobs?status=draft", f"/api/jobs/{active}",
                 f"/api/jobs/{active}/similar", "/metrics"):
        response = client.get(path, headers=auth_headers)
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == "private, no-store", path
        assert "Authorization" in response.vary, path
    # A wrong token gets the anonymous answer, and is not cached for the public either.
    wrong = client.get(f"/api/jobs/{active}/similar", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 200 and "public" not in wrong.headers["Cache-Control"]
    # Anonymous answers stay public and cacheable, and say that the token would change them.
    assert client.get(f"/api/jobs/{draft}/similar").status_code == 404
    public = client.get(f"/api/jobs/{active}/similar")
    assert public.status_code == 200 and public.headers["Cache-Control"] == "public, max-age=15"
    assert "Authorization" in public.vary


def test_a_signed_in_session_keeps_vary_cookie_with_vary_authorization(client, sign_in, auth_headers):
    active = create(client, auth_headers)["id"]
    sign_in("admin")
    response = client.get("/api/admin/embeddings/status", headers=auth_headers)
    assert response.headers["Cache-Control"] == "private, no-store"
    assert {"Cookie", "Authorization"} <= set(response.vary)
    similar = client.get(f"/api/jobs/{active}/similar", headers=auth_headers)
    assert similar.headers["Cache-Control"] == "private, no-store" and "Authorization" in similar.vary
