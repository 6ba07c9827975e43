"""The overview: throughput, time estimates, recent errors, the open-alert banner, and all of it in one dict."""
from __future__ import annotations

from datetime import datetime, timedelta

from jobflow.models import QueueItem
from jobflow.ops import samples
from jobflow.ops.capture_status import capture_status
from jobflow.ops.counts import job_counts, queue_counts
from jobflow.ops.queue_view import QUEUE_FIELDS, with_titles
from jobflow.ops.thresholds import queue_too_long, too_many_failed_items, too_many_failures
from jobflow.ops.workers import worker_rows, worker_summary
from jobflow.timeutil import utcnow


def finished_since(status: str, since: datetime) -> int:
    """Items that reached ``status`` since ``since`` (index ``status, finishedAt``)."""
    return QueueItem._get_collection().count_documents({"status": status, "finishedAt": {"$gte": since}})


def throughput_per_minute(now: datetime | None = None) -> float | None:
    """Items completed per minute: over the last 15 minutes, else the busy minutes of the last day; None if unknown."""
    now = now or utcnow()
    recent = finished_since("completed", now - timedelta(minutes=15))
    if recent:
        return recent / 15
    day = samples.totals(now - timedelta(days=1), now)
    if day and day["busyMinutes"]:
        return day["completed"] / day["busyMinutes"]
    return None


def estimate_seconds(count: int, per_minute: float | None) -> float | None:
    """How long ``count`` items take at ``per_minute``; None when the rate is unknown."""
    if not count:
        return 0.0
    if not per_minute:
        return None
    return count / per_minute * 60


def recent_errors(now: datetime | None = None, limit: int = 8) -> list[dict]:
    """The newest failed items with their job's title."""
    now = now or utcnow()
    docs: list[dict] = []
    for span in (timedelta(hours=1), timedelta(days=1), timedelta(days=7), None):
        query: dict = {"status": "failed"}
        if span is not None:
            query["finishedAt"] = {"$gte": now - span}
        docs = list(QueueItem._get_collection().find(query, QUEUE_FIELDS).sort("finishedAt", -1).limit(limit))
        if len(docs) >= limit:
            break
    return with_titles(docs)



# ----- overview --------------------------------------------------------------------------------

def overview_data(settings: dict, now: datetime | None = None) -> dict:
    """Everything the overview page and ``/api/admin/embeddings/status`` show, from bounded queries."""
    now = now or utcnow()
    sample = samples.latest_sample(now)
    counts = queue_counts(sample)
    rows = worker_rows(settings, now)
    summary = worker_summary(rows)
    per_minute = throughput_per_minute(now)
    day = samples.totals(now - timedelta(days=1), now)
    hour_failures = finished_since("failed", now - timedelta(hours=1))
    if day is not None:
        done = day["completed"] + day["failures"]
        failure_rate = round(day["failures"] / done * 100, 2) if done else 0.0
    else:
        hour_done = finished_since("completed", now - timedelta(hours=1)) + hour_failures
        failure_rate = round(hour_failures / hour_done * 100, 2) if hour_done else 0.0
    data = {
        "now": now,
        "queue": counts,
        "jobs": job_counts(settings, sample),
        "workers": summary,
        "workerRows": rows,
        "throughputPerMinute": round(per_minute, 2) if per_minute else None,
        "backlogSeconds": estimate_seconds(counts["pending"], per_minute),
        "failureRate": failure_rate,
        "failureRateWindow": "24h" if day is not None else "1h",
        "failuresLastHour": hour_failures,
        "completedLastHour": finished_since("completed", now - timedelta(hours=1)),
        "sampleTime": sample["time"] if sample else None,
        "capture": capture_status(settings, now),
    }
    data["alerts"] = open_alerts(data, settings)
    return data


def open_alerts(data: dict, settings: dict) -> list[dict]:
    """What an admin should act on now, worst first: the stored open alerts, and what the figures show now.

    Stored alerts (``jobflow.alerts``, written by the worker's check and emailed)
    come first; a condition seen in the live figures is added unless a stored
    alert of the same rule already says it (a stopped worker checks nothing).
    """
    alerts = stored_open_alerts()
    seen = {a["key"] for a in alerts}
    live = []
    counts, summary = data["queue"], data["workers"]
    if summary["alive"] == 0:
        live.append({"key": "workers", "level": "bad", "title": "No worker is alive",
                     "detail": "Nothing is being embedded. Start one: flask --app app worker"})
    for row in data["workerRows"]:
        if row["level"] in ("ok", "stale") and row["state"] == "degraded":
            live.append({"key": "provider", "level": "bad", "title": f"Worker {row['workerId']} stopped claiming",
                         "detail": row["reason"] or "degraded"})
        elif row["level"] in ("ok", "stale") and row["state"] == "paused":
            live.append({"key": "paused", "level": "warn", "title": f"Worker {row['workerId']} paused",
                         "detail": row["reason"] or "memory"})
    if too_many_failures(data["failuresLastHour"], settings):
        live.append({"key": "failures", "level": "bad",
                     "title": f"{data['failuresLastHour']} failures in the last hour",
                     "detail": f"threshold {settings['ALERT_THRESHOLD_FAILURES']}; see Failures"})
    if queue_too_long(counts["pending"], settings):
        live.append({"key": "queue", "level": "warn", "title": f"{counts['pending']:,} items pending",
                     "detail": f"threshold {settings['ALERT_THRESHOLD_QUEUE_SIZE']}"})
    if too_many_failed_items(counts["failed"], settings):
        live.append({"key": "failed-items", "level": "warn", "title": f"{counts['failed']:,} failed items in the queue",
                     "detail": "retry them from Failures once the cause is fixed"})
    if summary["deadHolding"]:
        live.append({"key": "dead-holding", "level": "warn",
                     "title": f"Dead workers hold {summary['deadHolding']} items",
                     "detail": "give them back from Workers (or wait for QUEUE_STUCK_TIMEOUT)"})
    if data["capture"]["problem"]:
        live.append({"key": "capture", "level": "bad" if data["capture"]["state"] == "down" else "warn",
                     "title": "Change capture " + data["capture"]["state"], "detail": data["capture"]["problem"]})
    if data["capture"].get("misfitCount"):
        live.append({"key": "misfits", "level": "warn",
                     "title": f"{data['capture']['misfitCount']:,} job documents cannot be used",
                     "detail": "they are not embedded; see Change capture below for each reason"})
    alerts += [a for a in live if a["key"] not in seen]
    return sorted(alerts, key=lambda a: a["level"] != "bad")


def stored_open_alerts() -> list[dict]:
    """The open alerts of the alert rules (jobflow.alerts), as overview entries."""
    from jobflow.models import Alert
    return [{"key": a["key"], "level": "bad" if a.get("severity") == "critical" else "warn",
             "title": a.get("title") or a["key"], "detail": a.get("summary") or "", "since": a.get("openedAt"),
             "page": a.get("page"), "stored": True}
            for a in Alert._get_collection().find({"status": "open"}).limit(50)]


