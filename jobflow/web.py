"""Public pages: the home page and a job's page as the board's visitors see it."""
from flask import Blueprint, render_template

from .jobs import list_jobs

bp = Blueprint("web", __name__)


@bp.get("/")
def home():
    """Newest active jobs, each linking to its page."""
    jobs, total, _ = list_jobs(status="active", limit=50)
    return render_template("home.html", jobs=jobs, total=total)
