"""``GET /api/jobs/<id>/similar``: what the board's frontend fetches."""
from flask import current_app, jsonify

from jobflow.similarity.answer import similar_jobs
from jobflow.web.access import bearer_ok
from jobflow.web.api.blueprint import bp
from jobflow.web.api.params import int_arg, language_arg


@bp.get("/jobs/<job_id>/similar")
def similar(job_id):
    """The job's similar jobs (precomputed list or fallback); ``limit`` up to SIMILARITY_TOP_N; ``language``
    keeps only jobs in that language (from the same list: fewer may come back)."""
    top_n = current_app.config["SIMILARITY_TOP_N"]
    # Without the token only active jobs exist (drafts and closed postings are not the public's).
    body = similar_jobs(job_id, int_arg("limit", top_n, 1, top_n), active_only=not bearer_ok(),
                        language=language_arg())
    response = jsonify(body)
    # Lists change when jobs arrive or close: a short public cache keeps the board fast and current.
    response.headers["Cache-Control"] = "public, max-age=60" if body["cached"] else "public, max-age=15"
    return response
