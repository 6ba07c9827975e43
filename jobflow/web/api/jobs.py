"""Jobs CRUD: ``/api/jobs``."""
from flask import current_app, jsonify, request, url_for

from jobflow import readmodel
from jobflow.jobs import store
from jobflow.web.access import bearer_ok, token_required
from jobflow.web.api.blueprint import bp
from jobflow.web.api.params import int_arg
from jobflow.web.errors import APIError
from jobflow.web.headers import mark_stale


def _json_body():
    if not request.is_json:
        raise APIError(415, "unsupported_media_type", "Send the body as application/json.")
    data = request.get_json(silent=True)
    if data is None:
        raise APIError(400, "invalid_json", "The request body is not valid JSON.")
    return data


@bp.get("/jobs")
def list_jobs():
    """Jobs newest first; filters status, category, q; keyset pagination with ``after``."""
    limit = int_arg("limit", 20, 1, 100)
    after = request.args.get("after") or None
    if after:
        try:
            store.parse_id(after)
        except store.JobNotFound:
            raise APIError(400, "invalid_input", "after must be a job id.", {"after": "expected a job id"})
    q = request.args.get("q") or None
    if q and len(q) > 200:
        raise APIError(400, "invalid_input", "q is too long.", {"q": "longer than 200 characters"})
    status = request.args.get("status") or None
    private = bearer_ok()
    if not private:
        # Without the token only active jobs are listed: drafts and closed postings are not the public's.
        if status not in (None, "active"):
            raise APIError(401, "unauthorized", "Jobs that are not active need Authorization: Bearer <ADMIN_API_TOKEN>.",
                           headers={"WWW-Authenticate": "Bearer"})
        status = "active"
    jobs, total, next_after = store.list_jobs(
        status=status, category=request.args.get("category") or None,
        q=q, limit=limit, after=after)
    body = {"jobs": [store.job_json(j, detail=False) for j in jobs], "count": len(jobs), "total": total,
            "next": url_for("api.list_jobs", **{**request.args.to_dict(), "after": next_after}) if next_after else None}
    return jsonify(body)


@bp.get("/jobs/<job_id>")
def get_job(job_id):
    """One job: active ones for everyone; any, with the embedding's error, for token holders."""
    private = bearer_ok()
    model = None if private else readmodel.for_app(current_app)
    held = model.job(store.parse_id(job_id)) if model else None
    if held is not None:
        return mark_stale(jsonify(held), model)
    return jsonify(store.job_json(store.get_job(job_id, active_only=not private), private=private))


def _forget(job_id) -> None:
    """A job written here leaves this process's memory at once (its next state comes back with the stream)."""
    model = readmodel.for_app(current_app)
    if model is not None:
        model.forget(store.parse_id(job_id))


@bp.post("/jobs")
@token_required
def create_job():
    """Create a job; its embedding is queued."""
    job = store.create_job(store.validate(_json_body()))
    _forget(job.id)
    response = jsonify(store.job_json(job, private=True))
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_job", job_id=str(job.id))
    return response


@bp.put("/jobs/<job_id>")
@token_required
def replace_job(job_id):
    """Replace a job's fields."""
    store.get_job(job_id)
    fields = store.validate(_json_body())
    job = store.update_job(job_id, fields, replace=True)
    _forget(job_id)
    return jsonify(store.job_json(job, private=True))


@bp.patch("/jobs/<job_id>")
@token_required
def patch_job(job_id):
    """Change some of a job's fields."""
    store.get_job(job_id)
    fields = store.validate(_json_body(), partial=True)
    job = store.update_job(job_id, fields)
    _forget(job_id)
    return jsonify(store.job_json(job, private=True))


@bp.delete("/jobs/<job_id>")
@token_required
def delete_job(job_id):
    """Delete a job."""
    store.delete_job(job_id)
    _forget(job_id)
    return "", 204
