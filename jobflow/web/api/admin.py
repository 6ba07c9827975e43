"""The admin JSON API: ``/api/admin/embeddings/...``.

Authenticated by ``Authorization: Bearer ADMIN_API_TOKEN``, or by a signed-in
dashboard session (writes then need the admin role and an ``X-CSRFToken``
header). Calls the same functions as the dashboard pages.
"""
from flask import current_app, jsonify, request, url_for
from flask_login import current_user
from flask_wtf import csrf

from jobflow.ops import actions, samples
from jobflow.ops.counts import queue_counts
from jobflow.ops.overview import overview_data
from jobflow.ops.queue_view import PAGE_SIZE, TASK_TYPES, QueueFilter, parse_oid, queue_page
from jobflow.ops.request_limit import take_write
from jobflow.ops.workers import worker_rows, worker_summary
from jobflow.timeutil import iso, utcnow
from jobflow.web.access import bearer_ok, session_expired, too_many
from jobflow.web.api.blueprint import bp
from jobflow.web.api.params import int_arg
from jobflow.web.errors import APIError


def _actor(write: bool) -> actions.Actor:
    """Who calls: the token holder or the signed-in user; refuse anyone else (and viewers on writes)."""
    if bearer_ok():
        return actions.Actor("api-token", "api", request.remote_addr)
    if current_user.is_authenticated:
        if write:
            if not current_user.can_act:
                raise APIError(403, "forbidden", "Viewers may look but not act.")
            try:
                csrf.validate_csrf(request.headers.get("X-CSRFToken") or request.headers.get("X-CSRF-Token"))
            except csrf.ValidationError:
                raise APIError(400, "csrf_failed", "Send the session's CSRF token in the X-CSRFToken header.")
        return actions.Actor(current_user.email, "api", request.remote_addr)
    if session_expired():
        raise APIError(401, "session_expired", "The dashboard session expired; sign in again.")
    raise APIError(401, "unauthorized", "Send Authorization: Bearer <ADMIN_API_TOKEN>.",
                   headers={"WWW-Authenticate": "Bearer"})


def _writer() -> actions.Actor:
    """Who writes (``_actor``), counted against the write limit every process shares (30 a minute per client)."""
    actor = _actor(write=True)
    retry_after = take_write(request.remote_addr, utcnow())
    if retry_after is not None:
        raise too_many("Too many admin API writes", retry_after)
    return actor


def _body() -> dict:
    data = request.get_json(silent=True) if request.data else {}
    if data is None or not isinstance(data, dict):
        raise APIError(400, "invalid_json", "Send a JSON object (or no body).")
    return data


def _dry_run(body: dict) -> bool:
    return bool(body.get("dryRun")) or request.args.get("dryRun") in ("1", "true", "yes")


def _item_json(item: dict) -> dict:
    return {"id": str(item["_id"]), "jobId": str(item.get("jobId")), "jobTitle": item.get("jobTitle"),
            "taskType": item.get("taskType"), "status": item.get("status"), "priority": item.get("priority"),
            "attempts": item.get("attempts"), "lockedBy": item.get("lockedBy"), "lastError": item.get("lastError"),
            "source": (item.get("metadata") or {}).get("source"), "createdAt": iso(item.get("createdAt")),
            "updatedAt": iso(item.get("updatedAt")), "nextAttemptAt": iso(item.get("nextAttemptAt")),
            "finishedAt": iso(item.get("finishedAt"))}


@bp.get("/admin/embeddings/status")
def admin_status():
    """Coverage, totals, queue counts, workers, throughput, failure rate, open alerts."""
    _actor(write=False)
    data = overview_data(current_app.config)
    jobs = data["jobs"]
    return jsonify({
        "timestamp": iso(data["now"]),
        "coverage": {"percent": jobs["coverage"], "of": "active jobs", "activeCurrent": jobs["activeCurrent"],
                     "active": jobs["active"], "current": jobs["current"], "total": jobs["total"],
                     "model": jobs["model"], "byModel": jobs["byModel"]},
        "jobs": {"total": jobs["total"], "withCurrentEmbedding": jobs["current"],
                 "embeddingFailed": jobs["failed"], "textChanged": jobs["textChanged"]},
        "queue": data["queue"].as_json(),
        "countsAsOf": iso(data["queue"].as_of or jobs["asOf"]) if data["queue"].sampled or jobs["approx"] else None,
        "workers": {k: data["workers"][k] for k in ("alive", "stale", "dead", "stopped")},
        "throughputPerMinute": data["throughputPerMinute"],
        "completedLastHour": data["completedLastHour"],
        "failuresLastHour": data["failuresLastHour"],
        "failureRate": {"percent": data["failureRate"], "window": data["failureRateWindow"]},
        "backlogSeconds": data["backlogSeconds"],
        "alerts": data["alerts"],
    })


def _cursor(name: str) -> str | None:
    """A keyset cursor from the query string: a queue item id (24 hex digits), absent, or a 400 naming it."""
    raw = request.args.get(name)
    if not raw:
        return None
    if len(raw) != 24 or parse_oid(raw) is None:
        raise APIError(400, "invalid_input", f"{name} must be a queue item id (24 hex digits).",
                       {name: "expected a queue item id"})
    return raw


@bp.get("/admin/embeddings/queue")
def admin_queue():
    """Queue items newest first; filters status, task, q (job id or title); keyset pages with ``before``."""
    _actor(write=False)
    flt = QueueFilter.from_args(request.args)
    limit = int_arg("limit", PAGE_SIZE, 1, 200)
    page = queue_page(flt, before=_cursor("before"), after=_cursor("after"), limit=limit)
    counts = queue_counts(samples.latest_sample())
    args = {**flt.args(), "limit": limit} if limit != PAGE_SIZE else flt.args()
    return jsonify({"items": [_item_json(i) for i in page.items], "count": len(page.items),
                    "counts": counts.as_json(),
                    "next": url_for("api.admin_queue", before=page.older, **args) if page.older else None,
                    "previous": url_for("api.admin_queue", after=page.newer, **args) if page.newer else None})


@bp.get("/admin/embeddings/workers")
def admin_workers():
    """Every known worker with its heartbeat level (ok, stale, dead, stopped) and the items it holds."""
    _actor(write=False)
    rows = worker_rows(current_app.config)
    return jsonify({"workers": [{**r, "lastHeartbeat": iso(r["lastHeartbeat"]), "startedAt": iso(r["startedAt"]),
                                 "batch": ({**r["batch"], "startedAt": iso(r["batch"]["startedAt"])}
                                           if r["batch"] else None)} for r in rows],
                    **worker_summary(rows)})


def _result(action: str, count: int, message: str):
    return jsonify({"action": action, "count": count, "message": message})


@bp.post("/admin/embeddings/recompute-all")
def admin_recompute_all():
    """Ask the workers to recompute every similar-jobs list (``dryRun`` shows the impact only)."""
    actor, body = _writer(), _body()
    if _dry_run(body):
        return jsonify(actions.preview_recompute_all(current_app.config).as_json())
    count = actions.recompute_all(actor, current_app.config)
    return _result("recompute-all", count, f"asked the workers to recompute {count} lists")


@bp.post("/admin/embeddings/retry-failed")
def admin_retry_failed():
    """Failed items back to pending (optionally only one ``taskType``; ``dryRun`` shows the impact only)."""
    actor, body = _writer(), _body()
    task = body.get("taskType")
    if task is not None and task not in TASK_TYPES:
        raise APIError(400, "invalid_input", "Unknown taskType.", {"taskType": "expected one of " +
                                                                   ", ".join(TASK_TYPES)})
    query = {"taskType": task} if task else None
    what = f"failed {task} items" if task else "all failed items"
    if _dry_run(body):
        return jsonify(actions.preview_retry_failed(query, what).as_json())
    count = actions.retry_failed(actor, query, what)
    return _result("retry-failed", count, f"{count} failed items are pending again")


@bp.post("/admin/embeddings/clear-old-queue")
def admin_clear_old_queue():
    """Delete finished items older than ``days`` (default QUEUE_CLEANUP_DAYS; ``dryRun`` shows the impact only)."""
    actor, body = _writer(), _body()
    days = body.get("days", current_app.config["QUEUE_CLEANUP_DAYS"])
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 3650:
        raise APIError(400, "invalid_input", "days must be a whole number from 0 to 3650.",
                       {"days": "expected 0 to 3650"})
    if _dry_run(body):
        return jsonify(actions.preview_clear_old(days).as_json())
    count = actions.clear_old_queue(actor, days)
    return _result("clear-old-queue", count, f"deleted {count} finished items older than {days} days")
