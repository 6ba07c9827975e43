"""Alert rules: ``gather`` reads the figures with a few indexed queries; ``assess`` decides, with no side effects.

Every rule looks at a ``Snapshot`` and returns a ``Finding``, firing or not, so a
resolved alert can show the figures that cleared it. What each rule measures is
in RELIABILITY.md, "Design notes".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from jobflow.ops.thresholds import queue_too_long, too_many_failures
from jobflow.timeutil import duration_text, ms

FAILURE_WINDOW = timedelta(hours=1)
RATE_LIMIT_WINDOW = timedelta(minutes=15)
RATE_LIMIT_REPEATS = 5
COVERAGE_WINDOW = timedelta(hours=1)
RATE_LIMIT_TEXT = "rate limit"

# Dashboard pages that show each rule's figures (paths under PUBLIC_BASE_URL).
PAGES = {
    "failures": "/admin/embeddings/failures",
    "queue": "/admin/embeddings/queue",
    "workers": "/admin/embeddings/workers",
    "provider": "/admin/embeddings/workers",
    "coverage": "/admin/embeddings",
    "capture": "/admin/embeddings",
}
ALERTS_PAGE = "/admin/embeddings/alerts"


@dataclass(frozen=True)
class DegradedWorker:
    """A live worker that says the provider does not work, and why."""
    worker_id: str
    reason: str
    provider: str = ""
    model: str = ""


@dataclass(frozen=True)
class Snapshot:
    """The figures the rules look at, read at ``at``."""
    at: datetime
    failed_final: int = 0                 # failed for good within FAILURE_WINDOW
    failed_retrying: int = 0              # pending/processing items with a failed attempt within FAILURE_WINDOW
    queue: dict = field(default_factory=dict)   # items per status
    live_heartbeat: datetime | None = None      # newest heartbeat of a worker that is not stopped
    last_heartbeat: datetime | None = None      # newest heartbeat of any worker, stopped ones too, but not of
                                                # a worker switched off (it heartbeats but never embeds)
    live_workers: int = 0
    disabled_workers: int = 0             # heard from within WORKER_DEAD_THRESHOLD, but switched off
    degraded: tuple[DegradedWorker, ...] = ()
    rate_limits: int = 0                  # rate-limit events within RATE_LIMIT_WINDOW
    active_jobs: int = 0
    embedded_jobs: int = 0                # active jobs whose embedding is completed
    coverage_samples: tuple[tuple[datetime, float], ...] = ()  # earlier checks' coverage
    capture: dict = field(default_factory=dict)                # ops.capture_status.capture_status

    @property
    def failures(self) -> int:
        """Queue items that failed in the last hour (see the module docstring)."""
        return self.failed_final + self.failed_retrying

    @property
    def pending(self) -> int:
        """Items waiting in the queue."""
        return int(self.queue.get("pending", 0))

    @property
    def coverage(self) -> float | None:
        """Share of active jobs with a completed embedding; None without active jobs."""
        return self.embedded_jobs / self.active_jobs if self.active_jobs else None

    def coverage_reference(self) -> float | None:
        """The highest coverage of the checks within COVERAGE_WINDOW before this one."""
        since = self.at - COVERAGE_WINDOW
        values = [value for at, value in self.coverage_samples if since <= at < self.at]
        return max(values) if values else None


@dataclass(frozen=True)
class Finding:
    """What one rule concluded: firing or not, with its figures and the page that shows them."""
    key: str
    firing: bool
    severity: str
    title: str
    summary: str
    figures: dict
    page: str


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"




def failures_rule(s: Snapshot, settings: dict) -> Finding:
    """Too many queue items failed in the last hour."""
    limit = settings["ALERT_THRESHOLD_FAILURES"]
    return Finding(
        key="failures", firing=too_many_failures(s.failures, settings), severity="warning",
        title="Embedding failures above the threshold",
        summary=f"{s.failures} queue items failed in the last hour (alert above {limit})",
        figures={"failed in the last hour": s.failures, "failed for good": s.failed_final,
                 "failed an attempt, will retry": s.failed_retrying, "alert above": limit},
        page=PAGES["failures"])


def queue_rule(s: Snapshot, settings: dict) -> Finding:
    """Too many items pending."""
    limit = settings["ALERT_THRESHOLD_QUEUE_SIZE"]
    return Finding(
        key="queue", firing=queue_too_long(s.pending, settings), severity="warning",
        title="Embedding queue is backing up",
        summary=f"{s.pending} items pending (alert above {limit})",
        figures={"pending": s.pending, "processing": int(s.queue.get("processing", 0)),
                 "failed": int(s.queue.get("failed", 0)), "alert above": limit},
        page=PAGES["queue"])


def workers_rule(s: Snapshot, settings: dict) -> Finding:
    """No live worker for longer than WORKER_DEAD_THRESHOLD."""
    limit = ms(settings["WORKER_DEAD_THRESHOLD"])
    live_quiet = s.live_heartbeat is None or s.at - s.live_heartbeat > limit
    all_quiet = s.last_heartbeat is None or s.at - s.last_heartbeat > limit
    firing = live_quiet and all_quiet
    if s.last_heartbeat is None:
        summary = "no worker has ever reported"
        silent = "never reported"
    else:
        silent = duration_text(s.at - s.last_heartbeat)
        summary = (f"no worker has sent a heartbeat for {silent} (limit {duration_text(limit)})" if firing
                   else f"live workers: {s.live_workers}")
    if firing and s.disabled_workers:
        summary += (f"; {s.disabled_workers} worker(s) run with embedding switched off "
                    "(EMBEDDING_WORKER_ENABLED=false or a rollback)")
    return Finding(
        key="workers", firing=firing, severity="critical",
        title="No live embedding worker",
        summary=summary,
        figures={"live workers": s.live_workers, "switched off": s.disabled_workers,
                 "last heartbeat": silent + (" ago" if s.last_heartbeat else ""),
                 "dead after": duration_text(limit)},
        page=PAGES["workers"])


def provider_rule(s: Snapshot, settings: dict) -> Finding:
    """The embedding provider does not work: a degraded worker, or repeated rate limits."""
    rate_limited = s.rate_limits >= RATE_LIMIT_REPEATS
    window = duration_text(RATE_LIMIT_WINDOW)
    parts = [f"worker {w.worker_id}: {w.reason or 'degraded'}" for w in s.degraded[:3]]
    if len(s.degraded) > 3:
        parts.append(f"and {len(s.degraded) - 3} more degraded workers")
    if rate_limited:
        parts.append(f"{s.rate_limits} rate limits in the last {window}")
    figures = {"degraded workers": len(s.degraded), f"rate limits in the last {window}": s.rate_limits,
               "rate limits that alert": RATE_LIMIT_REPEATS}
    if s.degraded:
        first = s.degraded[0]
        figures["reason"] = first.reason or "degraded"
        if first.provider or first.model:
            figures["provider"] = " ".join(p for p in (first.provider, first.model) if p)
    return Finding(
        key="provider", firing=bool(s.degraded) or rate_limited,
        severity="critical" if s.degraded else "warning",
        title="Embedding provider unhealthy",
        summary="; ".join(parts) if parts else "provider healthy",
        figures=figures, page=PAGES["provider"])


def coverage_rule(s: Snapshot, settings: dict) -> Finding:
    """Coverage of active jobs fell within the last hour, or is below the floor."""
    coverage = s.coverage
    reference = s.coverage_reference()
    drop = settings["ALERT_COVERAGE_DROP"]
    floor = settings["ALERT_COVERAGE_MIN"]
    falling = coverage is not None and reference is not None and reference - coverage > drop + 1e-9
    low = coverage is not None and floor > 0 and coverage < floor
    if falling:
        summary = f"coverage {_percent(coverage)} of active jobs, down from {_percent(reference)} within the hour"
    elif low:
        summary = f"coverage {_percent(coverage)} of active jobs, below {_percent(floor)}"
    else:
        summary = f"coverage {_percent(coverage)} of active jobs"
    return Finding(
        key="coverage", firing=falling or low, severity="warning",
        title="Embedding coverage falling",
        summary=summary,
        figures={"coverage": _percent(coverage), "active jobs": s.active_jobs,
                 "with a completed embedding": s.embedded_jobs,
                 "highest in the last hour": _percent(reference), "alert on a drop of": _percent(drop),
                 "alert below": _percent(floor) if floor > 0 else "off"},
        page=PAGES["coverage"])


def capture_rule(s: Snapshot, settings: dict) -> Finding:
    """Change capture is down (no worker follows the jobs), or further behind than ALERT_CAPTURE_LAG."""
    capture = s.capture or {}
    state = capture.get("state", "off")
    lag = capture.get("lag") or {}
    return Finding(
        key="capture", firing=state in ("down", "behind"), severity="critical" if state == "down" else "warning",
        title="Change capture down or behind",
        summary=capture.get("problem") or f"change capture {state}" + (f" ({capture.get('mode')})"
                                                                      if capture.get("mode") else ""),
        figures={"mode": capture.get("mode") or "-", "state": state, "capturing worker": capture.get("owner") or "-",
                 "lag p99 (last minute)": f"{lag['p99']} ms" if lag.get("p99") is not None else "-",
                 "alert above": duration_text(ms(settings["ALERT_CAPTURE_LAG"]))},
        page=PAGES["capture"])


RULES: list[Callable[[Snapshot, dict], Finding]] = [failures_rule, queue_rule, workers_rule, provider_rule,
                                                     coverage_rule, capture_rule]


def assess(snapshot: Snapshot, settings: dict) -> list[Finding]:
    """Every rule's finding, firing or not."""
    return [rule(snapshot, settings) for rule in RULES]


def evaluate(snapshot: Snapshot, settings: dict) -> list[Finding]:
    """The findings that fire."""
    return [finding for finding in assess(snapshot, settings) if finding.firing]


# ----- reading the figures -------------------------------------------------------------------------

def gather(settings: dict, now: datetime) -> Snapshot:
    """Read the figures the rules need: a handful of indexed counts and small reads."""
    from jobflow.models import AlertState, QueueItem, WorkerStatus
    from jobflow.models.worker_status import live_query
    from jobflow.ops.capture_status import capture_status
    from jobflow.ops.counts import job_counts, queue_counts
    from jobflow.ops.samples import latest_sample

    items = QueueItem._get_collection()
    # Large counts come from the minute's sample (as on the pages): counted again here, each would hold the
    # embedded database for as long as it reads, once a minute, in the middle of a drain.
    sample = latest_sample(now)
    counts = queue_counts(sample).values
    hour_ago = now - FAILURE_WINDOW
    rate_since = now - RATE_LIMIT_WINDOW
    failed_final = items.count_documents({"status": "failed", "finishedAt": {"$gte": hour_ago}})
    failed_retrying = 0
    rate_limits = 0
    # errorHistory.at first: its sparse index holds only the items that ever failed (the state index, all of them).
    for doc in items.find({"errorHistory.at": {"$gte": hour_ago}, "status": {"$in": ["pending", "processing"]}},
                          {"errorHistory": 1}):
        failed_retrying += 1
        rate_limits += sum(1 for entry in doc.get("errorHistory") or ()
                           if _at_or_after(entry.get("at"), rate_since)
                           and RATE_LIMIT_TEXT in str(entry.get("error", "")).lower())

    statuses = WorkerStatus._get_collection()
    dead_since = now - ms(settings["WORKER_DEAD_THRESHOLD"])
    newest = [("lastHeartbeat", -1)]
    live = statuses.find_one({"state": {"$ne": "stopped"}}, {"lastHeartbeat": 1}, sort=newest)
    last = statuses.find_one({"disabled": {"$ne": True}}, {"lastHeartbeat": 1}, sort=newest)
    live_workers = statuses.count_documents(live_query(dead_since))
    disabled_workers = statuses.count_documents({"lastHeartbeat": {"$gte": dead_since}, "disabled": True})
    degraded = tuple(
        DegradedWorker(str(d.get("workerId", "")), str(d.get("reason") or ""), str(d.get("provider") or ""),
                       str(d.get("model") or ""))
        for d in statuses.find({"state": "degraded", "lastHeartbeat": {"$gte": dead_since}},
                               {"workerId": 1, "reason": 1, "provider": 1, "model": 1}).sort(newest))
    for d in statuses.find({"lastHeartbeat": {"$gte": dead_since}, "rateLimitedAt": {"$gte": rate_since}},
                           {"rateLimitedAt": 1}):
        rate_limits += sum(1 for at in d.get("rateLimitedAt") or () if _at_or_after(at, rate_since))

    coverage = job_counts(settings, sample)
    active, embedded = coverage["active"], coverage["activeCurrent"]
    state = AlertState._get_collection().find_one({"_id": "coverage"}) or {}
    samples = tuple((s["at"], float(s["coverage"])) for s in state.get("samples") or ()
                    if isinstance(s.get("at"), datetime) and s.get("coverage") is not None)

    return Snapshot(at=now, failed_final=failed_final, failed_retrying=failed_retrying, queue=counts,
                    live_heartbeat=(live or {}).get("lastHeartbeat"), last_heartbeat=(last or {}).get("lastHeartbeat"),
                    live_workers=live_workers, disabled_workers=disabled_workers, degraded=degraded, rate_limits=rate_limits,
                    active_jobs=active, embedded_jobs=embedded, coverage_samples=samples,
                    capture=capture_status(settings, now, misfits=False))


def _at_or_after(value, since: datetime) -> bool:
    return isinstance(value, datetime) and value >= since
