"""Public pages: the home page and a job's page as the board's visitors see it."""
from flask import Blueprint, abort, current_app, render_template

from jobflow import readmodel
from jobflow.jobs.store import JobNotFound, get_job, list_jobs, parse_id
from jobflow.web.headers import mark_stale

bp = Blueprint("web", __name__)


@bp.get("/")
def home():
    """Newest active jobs, each linking to its page."""
    jobs, total, _ = list_jobs(status="active", limit=50)
    return render_template("home.html", jobs=jobs, total=total)


@bp.get("/jobs/<job_id>")
def job_page(job_id):
    """A posting; the browser fetches its similar jobs from the JSON endpoint, as the board's frontend would."""
    model = readmodel.for_app(current_app)
    try:
        job = model.job(parse_id(job_id)) if model else None
        if job is None:
            job = get_job(job_id, active_only=True)   # drafts and closed postings are not public
    except JobNotFound:
        abort(404)
    return mark_stale(current_app.make_response(render_template("job.html", job=job)), model)
