"""``GET /api/health/embeddings``: healthy or degraded (and why); 503 when the database is down.

It answers within about two seconds: a ping decides whether the database is
reachable (503 if not); the counts then get their own budget, and if they
take longer the answer is degraded with the newest sample's figures, not an
error, because the database did answer.
"""
import logging

import pymongo
from flask import current_app, jsonify
from pymongo.errors import PyMongoError

from jobflow.db import get_db
from jobflow.ops.health import health, health_from_sample
from jobflow.timeutil import utcnow
from jobflow.web.api.blueprint import bp

log = logging.getLogger("jobflow.health")

PING_TIMEOUT_SECONDS = 1.0
COUNT_TIMEOUT_SECONDS = 1.5


def _unavailable(exc: Exception):
    log.warning("health check: database unavailable (%s)", type(exc).__name__)
    response = jsonify({"status": "error", "error": {
        "code": "database_unavailable",
        "message": f"The database did not answer within {PING_TIMEOUT_SECONDS:.0f} second."}})
    response.status_code = 503
    response.headers["Retry-After"] = "10"
    return response


def _reachable() -> Exception | None:
    try:
        with pymongo.timeout(PING_TIMEOUT_SECONDS):
            get_db().command("ping")
    except PyMongoError as exc:
        return exc
    return None


@bp.get("/health/embeddings")
def embeddings_health():
    """The seed's health report; never a stack trace, never slower than about two seconds."""
    problem = _reachable()
    if problem is not None:
        response = _unavailable(problem)
    else:
        try:
            with pymongo.timeout(COUNT_TIMEOUT_SECONDS):
                body = health(current_app.config)
        except PyMongoError as exc:
            if not getattr(exc, "timeout", False) or _reachable() is not None:
                response = _unavailable(exc)
            else:
                log.warning("health check: counting took longer than %.1fs", COUNT_TIMEOUT_SECONDS)
                try:
                    with pymongo.timeout(0.5):
                        body = health_from_sample(current_app.config, utcnow(), (
                            f"the database answered, but counting took longer than {COUNT_TIMEOUT_SECONDS}s: "
                            "figures are from the newest metric sample (is a worker running?)"))
                except PyMongoError as late:
                    return _unavailable(late)
                response = jsonify(body)
        else:
            response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response
