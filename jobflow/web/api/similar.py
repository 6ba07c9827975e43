"""``GET /api/jobs/<id>/similar``: what the board's frontend fetches."""
from flask import Response, current_app, jsonify

from jobflow import readmodel
from jobflow.jobs.store import parse_id
from jobflow.similarity.answer import similar_jobs
from jobflow.web.access import bearer_ok
from jobflow.web.api.blueprint import bp
from jobflow.web.api.params import int_arg, language_arg
from jobflow.web.headers import mark_stale


@bp.get("/jobs/<job_id>/similar")
def similar(job_id):
    """The job's similar jobs (precomputed list or fallback); ``limit`` up to SIMILARITY_TOP_N; ``language``
    keeps only jobs in that language (from the same list: fewer may come back)."""
    top_n = current_app.config["SIMILARITY_TOP_N"]
    limit, language, private = int_arg("limit", top_n, 1, top_n), language_arg(), bearer_ok()
    model = None if private else readmodel.for_app(current_app)
    held = model.similar(parse_id(job_id), limit, language) if model else None
    if held is not None:
        body, cached = held
        response = mark_stale(Response(body, mimetype="application/json"), model)
    else:
        # Without the token only active jobs exist (drafts and closed postings are not the public's).
        answer = similar_jobs(job_id, limit, active_only=not private, language=language)
        response, cached = jsonify(answer), answer["cached"]
    # Lists change when jobs arrive or close: a short public cache keeps the board fast and current.
    response.headers["Cache-Control"] = "public, max-age=60" if cached else "public, max-age=15"
    return response
