"""Dashboard pages: parse the request, call ``jobflow.ops``, render.

Every page can answer ``?fragment=live`` with just its live regions, which
``static/admin.js`` swaps in every few seconds. Every action is a POST with a
CSRF token (CSRFProtect) that first renders a confirmation page with the
action's impact and runs only when posted again with ``confirm=yes``.
"""
from __future__ import annotations

from typing import Callable

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFError

from jobflow.config import masked
from jobflow.ops import actions, recompute, samples
from jobflow.ops.actions import ActionRefused, Actor, Impact
from jobflow.ops.counts import queue_counts
from jobflow.ops.failures import failure_groups
from jobflow.ops.job_search import job_detail, search_jobs
from jobflow.ops.overview import overview_data, recent_errors
from jobflow.ops.queue_view import QUEUE_STATUSES, TASK_TYPES, QueueFilter, find_queue_item, queue_page
from jobflow.ops.workers import held_items, worker_rows, worker_summary
from jobflow.web.access import admin_required, viewer_required
from jobflow.web.admin import charts, formatting

bp = Blueprint("admin", __name__, url_prefix="/admin")
REFRESH_MS = 5000   # live regions refresh this often (ADMIN_REFRESH_MS overrides, for tests)
NAV = [("admin.overview", "Overview"), ("admin.queue", "Queue"), ("admin.workers", "Workers"),
       ("admin.failures", "Failures"), ("admin.jobs", "Jobs"), ("admin.alerts", "Alerts"),
       ("admin.settings", "Settings"), ("admin.audit_log", "Audit")]


@bp.context_processor
def admin_context():
    section = {"admin.queue_item": "admin.queue", "admin.job": "admin.jobs"}.get(request.endpoint, request.endpoint)
    return {"fmt": formatting, "nav": NAV, "section": section, "live": request.args.get("fragment") == "live",
            "can_act": bool(getattr(current_user, "can_act", False)),
            "refresh_ms": int(current_app.config.get("ADMIN_REFRESH_MS", REFRESH_MS))}


@bp.errorhandler(CSRFError)
def stale_form(exc):
    return render_template("admin/error.html", title="The form expired",
                           message="The form was missing its security token or it expired. "
                                   "Go back, reload the page and try again."), 400


@bp.errorhandler(403)
def forbidden(exc):
    return render_template("admin/error.html", title="Not allowed",
                           message=getattr(exc, "description", "") or "You may not do that."), 403


def _settings() -> dict:
    return current_app.config


def _actor() -> Actor:
    return Actor(current_user.email, "page", request.remote_addr)


def _confirm_or_run(preview: Callable[[], Impact], run: Callable[[], object], back: str,
                    done: Callable[[object], str], hidden: dict | None = None):
    """First POST: show the impact and ask. POST with confirm=yes: run, say what happened, go back."""
    try:
        if request.form.get("confirm") != "yes":
            return render_template("admin/confirm.html", impact=preview(), action_url=request.path,
                                   hidden=hidden or {}, back=back)
        result = run()
    except ActionRefused as exc:
        flash(str(exc), "error")
        return redirect(back)
    flash(done(result), "success")
    return redirect(back)


# ----- pages -------------------------------------------------------------------------------------

@bp.get("/")
@viewer_required
def index():
    return redirect(url_for("admin.overview"))


@bp.get("/embeddings")
@viewer_required
def overview():
    """Coverage, queue, workers, throughput, charts, costs, recent errors, open alerts."""
    range_name = request.args.get("range") if request.args.get("range") in samples.RANGES else "3h"
    data = overview_data(_settings())
    series = samples.buckets(range_name, data["now"])
    long_range = series["range"] in ("7d", "30d")
    chart_list = [
        charts.line_chart("Throughput", "items/min", series["times"],
                          [("completed", "s-ok", series["throughput"]), ("failed", "s-bad", series["failures"])],
                          long_range),
        charts.line_chart("Queue depth", "pending", series["times"], [("pending", "s-accent", series["pending"])],
                          long_range),
        charts.line_chart("Latency", "seconds", series["times"],
                          [("p95", "s-warn", series["p95"]), ("p50", "s-accent", series["p50"])], long_range),
    ]
    usage = samples.usage(_settings(), data["now"])
    days = usage["days"]
    usage_chart = charts.bar_chart([d["tokens"] for d in days],
                                   [f"{d['day']:%b %d}: {d['tokens']:,} tokens, {formatting.money(d['cost'])}" for d in days])
    return render_template("admin/overview.html", data=data, series=series, charts=chart_list, usage=usage,
                           usage_chart=usage_chart, ranges=samples.RANGES, range_name=range_name,
                           errors=recent_errors(data["now"]), settings=_settings())


@bp.get("/embeddings/queue")
@viewer_required
def queue():
    """Queue items by state and task, searchable by job id or title, keyset pages newest first."""
    flt = QueueFilter.from_args(request.args)
    page = queue_page(flt, before=request.args.get("before"), after=request.args.get("after"))
    counts = queue_counts(samples.latest_sample())
    return render_template("admin/queue.html", flt=flt, page=page, counts=counts, states=QUEUE_STATUSES,
                           tasks=TASK_TYPES)


@bp.get("/embeddings/queue/<item_id>")
@viewer_required
def queue_item(item_id):
    """One item with every attempt's error."""
    item = find_queue_item(item_id)
    if item is None:
        abort(404)
    return render_template("admin/queue_item.html", item=item)


@bp.get("/embeddings/workers")
@viewer_required
def workers():
    """Live workers first; dead and stopped ones folded away."""
    rows = worker_rows(_settings())
    return render_template("admin/workers.html", alive=[r for r in rows if r["level"] in ("ok", "stale")],
                           gone=[r for r in rows if r["level"] in ("dead", "stopped")],
                           summary=worker_summary(rows), settings=_settings())


@bp.get("/embeddings/failures")
@viewer_required
def failures():
    """Failed items grouped by error signature."""
    groups = failure_groups()
    return render_template("admin/failures.html", groups=groups, total=sum(g["count"] for g in groups))


@bp.get("/embeddings/jobs")
@viewer_required
def jobs():
    """Find a job by id, external id or title."""
    q = (request.args.get("q") or "").strip()[:200]
    return render_template("admin/jobs.html", q=q, results=search_jobs(q) if q else None)


@bp.get("/embeddings/jobs/<job_id>")
@viewer_required
def job(job_id):
    """A job's embedding, its similar jobs with scores, its queue items."""
    detail = job_detail(job_id, _settings())
    if detail is None:
        abort(404)
    return render_template("admin/job.html", d=detail)


@bp.get("/embeddings/alerts")
@viewer_required
def alerts():
    """The alerts the worker's checks opened (and emailed), open first, with their history."""
    from jobflow.alerts import list_alerts
    return render_template("admin/alerts.html", open_alerts=list_alerts("open"),
                           resolved=list_alerts("resolved", limit=30))


@bp.get("/embeddings/settings")
@viewer_required
def settings():
    """The effective configuration, secrets masked."""
    groups: dict[str, list] = {}
    for group, name, shown, help_text in masked(_settings()):
        groups.setdefault(group, []).append((name, shown, help_text))
    from jobflow.embeddings import min_score, provider_model
    derived = [("Embedding model in use", provider_model(_settings())),
               ("Minimum similarity score in use", f"{min_score(_settings()):.2f}" + (
                   f" on language-balanced scores ({min_score(_settings(), raw=True):.2f} on raw ones, before the "
                   "first correction)" if _settings()["SIMILARITY_LANGUAGE_BALANCE"] else " on raw cosine scores")),
               ("Language balance", recompute.correction_summary(_settings(), provider_model(_settings()))),
               ("Price per million tokens", formatting.money(samples.price_per_million(_settings()))),
               ("Database", "configured MONGODB_URI" if _settings().get("MONGODB_URI")
                else "embedded SecantusDB under instance/"),
               ("Change capture", capture_mode_text(_settings()))]
    return render_template("admin/settings.html", groups=groups, derived=derived)


def capture_mode_text(settings: dict) -> str:
    """The change capture mode in force and why, as its capturing worker decided it."""
    from jobflow.ops.capture_status import capture_status
    from jobflow.timeutil import utcnow
    capture = capture_status(settings, utcnow(), misfits=False)
    if capture["state"] == "off":
        return capture["reason"]
    if not capture["mode"]:
        return f"CHANGE_CAPTURE={settings['CHANGE_CAPTURE']}; no worker has started it yet"
    text = f"{capture['mode']}: {capture['reason']}"
    return text + (f" ({capture['problem']})" if capture["problem"] else "")


@bp.get("/embeddings/audit")
@viewer_required
def audit_log():
    """Every action, newest first."""
    entries = actions.recent_audit(request.args.get("before"))
    older = entries[-1].at.isoformat() if len(entries) >= actions.AUDIT_PAGE else None
    return render_template("admin/audit.html", entries=entries, older=older)


# ----- actions -----------------------------------------------------------------------------------

@bp.post("/embeddings/actions/recompute-all")
@admin_required
def recompute_all():
    return _confirm_or_run(lambda: actions.preview_recompute_all(_settings()),
                           lambda: actions.recompute_all(_actor(), _settings()), url_for("admin.overview"),
                           lambda n: f"Asked the workers to recompute {n:,} similar-jobs lists.")


@bp.post("/embeddings/actions/retry-failed")
@admin_required
def retry_failed():
    return _confirm_or_run(actions.preview_retry_failed, lambda: actions.retry_failed(_actor()),
                           url_for("admin.overview"), lambda n: f"{n:,} failed items are pending again.")


@bp.post("/embeddings/actions/clear-old-queue")
@admin_required
def clear_old_queue():
    days = request.form.get("days", type=int)
    if days is None or not 0 <= days <= 3650:
        days = _settings()["QUEUE_CLEANUP_DAYS"]
    return _confirm_or_run(lambda: actions.preview_clear_old(days), lambda: actions.clear_old_queue(_actor(), days),
                           url_for("admin.overview"), lambda n: f"Deleted {n:,} finished items older than {days} days.",
                           hidden={"days": days})


@bp.post("/embeddings/queue/retry-matching")
@admin_required
def retry_matching():
    flt = QueueFilter.from_args(request.form)
    back = url_for("admin.queue", **flt.args())
    query = flt.failed_query()
    if query is None:
        flash("This filter shows no failed items to retry.", "error")
        return redirect(back)
    what = f"failed items matching: {flt.describe()}"
    return _confirm_or_run(lambda: actions.preview_retry_failed(query, what),
                           lambda: actions.retry_failed(_actor(), query, what), back,
                           lambda n: f"{n:,} failed items are pending again.", hidden=flt.args())


@bp.post("/embeddings/queue/<item_id>/retry")
@admin_required
def retry_item(item_id):
    back = url_for("admin.queue_item", item_id=item_id)
    return _confirm_or_run(lambda: Impact("retry-item", f"Retry queue item {item_id}", 1, None,
                                          notes=["It goes back to pending with fresh attempts."],
                                          duration="the next free worker takes it"),
                           lambda: actions.retry_item(_actor(), item_id), back, lambda n: "The item is pending again.")


@bp.post("/embeddings/queue/<item_id>/discard")
@admin_required
def discard_item(item_id):
    back = url_for("admin.queue_item", item_id=item_id)
    return _confirm_or_run(lambda: Impact("discard-item", f"Discard queue item {item_id}", 1, None,
                                          notes=["It ends as skipped and will not be attempted again.",
                                                 "The job keeps its current embedding (if any)."],
                                          duration="at once"),
                           lambda: actions.discard_item(_actor(), item_id, _settings()), back,
                           lambda n: "The item was discarded.")


@bp.post("/embeddings/workers/<path:worker_id>/release")
@admin_required
def release_worker(worker_id):
    held = held_items().get(worker_id, 0)
    return _confirm_or_run(lambda: Impact("release-worker", f"Give back the items of worker {worker_id}", held, None,
                                          notes=["They return to pending for the live workers."],
                                          duration="at once"),
                           lambda: actions.release_dead_worker(_actor(), worker_id, _settings()),
                           url_for("admin.workers"), lambda n: f"{n:,} items are pending again.")


@bp.post("/embeddings/failures/retry")
@admin_required
def retry_group():
    signature = request.form.get("signature", "")
    return _confirm_or_run(lambda: actions.preview_retry_group(signature),
                           lambda: actions.retry_group(_actor(), signature), url_for("admin.failures"),
                           lambda n: f"{n:,} failed items are pending again.", hidden={"signature": signature})


@bp.post("/embeddings/jobs/<job_id>/requeue")
@admin_required
def requeue_job(job_id):
    return _confirm_or_run(lambda: Impact("requeue-job", "Queue this job's embedding", 1, None,
                                          notes=["If its text and model are unchanged the worker keeps the "
                                                 "embedding and refreshes its similar jobs."],
                                          duration="the next free worker takes it (live priority)"),
                           lambda: actions.requeue_job(_actor(), job_id), url_for("admin.job", job_id=job_id),
                           lambda created: "Queued." if created else "It was already pending; its priority is raised.")


@bp.post("/embeddings/alerts/test-email")
@admin_required
def test_email():
    """Send a test email to ALERT_EMAIL_TO with the MAIL_* settings (even when alert emails are off)."""
    from jobflow.alerts import send_test_email
    recipients = ", ".join(_settings()["ALERT_EMAIL_TO"]) or "(ALERT_EMAIL_TO is empty)"

    def run():
        result = send_test_email(current_app._get_current_object())
        actions.audit(_actor(), "test-email", recipients, 1 if result.ok else 0, ok=result.ok)
        if not result.ok:
            raise ActionRefused(result.message)
        return result.message
    return _confirm_or_run(lambda: Impact("test-email", f"Send a test email to {recipients}", 1, None, unit="email",
                                          notes=[f"Through {_settings().get('MAIL_SERVER') or '(no MAIL_SERVER)'}:"
                                                 f"{_settings().get('MAIL_PORT')}."],
                                          duration="at once"),
                           run, url_for("admin.alerts"), lambda message: message)
