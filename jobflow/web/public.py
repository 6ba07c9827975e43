"""Public pages: the home page and a job's page as the board's visitors see it."""
from flask import Blueprint, abort, render_template

from jobflow.jobs.store import JobNotFound, get_job, list_jobs

bp = Blueprint("web", __name__)


@bp.get("/")
def home():
    """Newest active jobs, each linking to its page."""
    jobs, total, _ = list_jobs(status="active", limit=50)
    return render_template("home.html", jobs=jobs, total=total)


@bp.get("/jobs/<job_id>")
def job_page(job_id):
    """A posting; the browser fetches its similar jobs from the JSON endpoint, as the board's frontend would."""
    try:
        job = get_job(job_id, active_only=True)   # drafts and closed postings are not public
    except JobNotFound:
        abort(404)
    return render_template("job.html", job=job)
