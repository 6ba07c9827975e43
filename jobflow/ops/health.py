"""The health report behind ``GET /api/health/embeddings``: healthy, or degraded with the reasons."""
from __future__ import annotations

from datetime import datetime, timedelta

from jobflow.ops import samples
from jobflow.ops.capture_status import capture_status
from jobflow.ops.counts import ACTIVE_STATES, Counts, coverage_figures, job_counts, queue_counts
from jobflow.ops.thresholds import queue_too_long, too_many_failed_items
from jobflow.ops.workers import alive_workers, worker_reasons
from jobflow.timeutil import utcnow

HEALTH_SAMPLE_AGE = timedelta(hours=1)   # health reads large counts from a sample up to this old


def health(settings: dict, now: datetime | None = None) -> dict:
    """The seed's health report; ``reasons`` says why it is degraded. Raises PyMongoError when the database fails.

    Large counts come from a sample up to an hour old (a health check must
    answer in about two seconds, and with no worker there is no fresh one).
    The workers' reasons name what stops them: a rollback, the setting, the
    memory guard, a refused key, or no heartbeat.
    """
    now = now or utcnow()
    sample = samples.latest_sample(now, HEALTH_SAMPLE_AGE)
    capture = capture_status(settings, now, misfits=False)
    return health_report(settings, now, queue_counts(sample), job_counts(settings, sample),
                         alive_workers(settings, now), (capture["problem"],) if capture["problem"] else (),
                         workers=tuple(worker_reasons(settings, now)))


def health_report(settings: dict, now: datetime, counts: Counts, jobs: dict, active: int,
                  extra_reasons: tuple[str, ...] = (), workers: tuple[str, ...] | None = None) -> dict:
    """The health body from the figures: healthy, or degraded with the reasons.

    ``workers``: why the workers do not embed (``worker_reasons``); None when unknown, then only "no active worker".
    """
    from jobflow.timeutil import iso
    reasons = list(extra_reasons)
    if workers is not None:
        reasons.extend(workers)
    elif active == 0:
        reasons.append("no active worker (no heartbeat within WORKER_DEAD_THRESHOLD)")
    if queue_too_long(counts["pending"], settings):
        reasons.append(f"{counts['pending']} pending items (ALERT_THRESHOLD_QUEUE_SIZE is "
                       f"{settings['ALERT_THRESHOLD_QUEUE_SIZE']})")
    if too_many_failed_items(counts["failed"], settings):
        reasons.append(f"{counts['failed']} failed items (ALERT_THRESHOLD_FAILED_ITEMS is "
                       f"{settings['ALERT_THRESHOLD_FAILED_ITEMS']})")
    body = {
        "status": "degraded" if reasons else "healthy",
        "timestamp": iso(now),
        "metrics": {
            "coverage": f"{jobs['coverage']:.2f}%",
            "coverageOf": "active jobs",
            "totalJobs": jobs["total"],
            "activeJobs": jobs["active"],
            "jobsWithEmbeddings": jobs["activeCurrent"],
            "queue": {"pending": counts["pending"], "processing": counts["processing"], "failed": counts["failed"]},
            "workers": {"active": active},
        },
    }
    if counts.sampled or jobs.get("approx"):
        body["metrics"]["countsAsOf"] = iso(counts.as_of or jobs.get("asOf"))
    if reasons:
        body["reasons"] = reasons
    return body


def health_from_sample(settings: dict, now: datetime, reason: str) -> dict:
    """A degraded health body from the newest sample of any age (when counting now took too long)."""
    sample = samples.latest_sample(now, HEALTH_SAMPLE_AGE) or samples.latest_sample(now, timedelta(days=1))
    counts = Counts({s: int((sample or {}).get(s) or 0) for s in ACTIVE_STATES},
                    set(ACTIVE_STATES) if sample else set(), sample["time"] if sample else None)
    jobs = coverage_figures(sample or {})
    return health_report(settings, now, counts, jobs, int((sample or {}).get("workersAlive") or 0), (reason,))


