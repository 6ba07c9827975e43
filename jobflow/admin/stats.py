"""Read-only queries behind the dashboard pages, the admin API and the health endpoint.

Every query here is served by an index and touches a bounded number of
documents, so pages stay fast with 10^5 queue items (``benchmarks/dashboard_bench.py``).
On the embedded database a query costs time in proportion to the documents
its index lookup returns, counts included, so:

* Large counts are not counted per page view. A state or job count that the
  latest per-minute sample (written by the worker) shows above
  ``LIVE_COUNT_LIMIT`` is taken from that sample and marked approximate;
  smaller ones are counted live, so the numbers an admin acts on (failed,
  processing, a small backlog) are always exact and current. With no fresh
  sample (no worker) a large live count is kept for a minute.
* Lists are keyset pages newest-first, read in growing ``_id`` windows of one
  state at a time (index ``status, -_id``), never a sort of a whole state.
* A filter names only fields of one index (an equality prefix, then at most
  one range or ``$in``), and never ``$or``: otherwise the server reads far
  more than it returns.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.collation import Collation
from pymongo.errors import ExecutionTimeout

from .. import queue
from ..embeddings import provider_model
from ..embeddings.text import job_text, text_hash
from ..models import Job, QueueItem, WorkerStatus
from ..models.queue_item import QUEUE_STATUSES
from ..models.worker_status import live_query
from ..thresholds import queue_too_long, too_many_failed_items, too_many_failures
from ..timeutil import utcnow
from . import samples

LIVE_COUNT_LIMIT = 2000                 # above this, a count comes from the latest sample (or a short cache)
LIVE_CACHE_SECONDS = 60                 # a large count taken live, with no fresh sample, is reused this long
ACTIVE_STATES = ("pending", "processing", "failed")
TASK_TYPES = (queue.GENERATE_EMBEDDING,)
PAGE_SIZE = 50
# Windows of ``_id`` time read one after the other until a page is full; the last is unbounded.
WINDOWS = (timedelta(minutes=15), timedelta(hours=2), timedelta(hours=16), timedelta(days=5), timedelta(days=40),
           None)
CASE_INSENSITIVE = Collation(locale="en", strength=2)   # the collation of Job's ``title_ci`` index
QUEUE_FIELDS = {"errorHistory": 0}


def _queue():
    return QueueItem._get_collection()


def _jobs():
    return Job._get_collection()


def parse_oid(value: Any) -> ObjectId | None:
    """An ObjectId from text, or None when it is not one."""
    if isinstance(value, ObjectId):
        return value
    try:
        return ObjectId(str(value or "").strip())
    except (InvalidId, TypeError):
        return None


# ----- counts -----------------------------------------------------------------------------------

@dataclass
class Counts:
    """Counts by name; ``sampled`` names came from the sample of ``as_of`` (approximate, large)."""
    values: dict[str, int]
    sampled: set[str] = field(default_factory=set)
    as_of: datetime | None = None

    def __getitem__(self, name: str) -> int:
        return self.values[name]

    def approx(self, name: str) -> bool:
        """True when the count was taken from the sample, not counted now."""
        return name in self.sampled

    def as_json(self) -> dict:
        return dict(self.values)


_live_cache: dict[str, tuple[float, Any, datetime]] = {}


def _counted(key: str, sample: dict | None, sample_key: str, count: Callable[[], Any], size: Callable[[Any], int]):
    """A count from the fresh sample when large there; else live, and a large live result is kept a minute.

    Returns (value, as_of) where as_of is None for a live count. On the
    embedded database a count costs time in proportion to what it counts;
    large ones are the worker's job, once a minute.
    """
    if sample is not None and sample.get(sample_key) is not None and size(sample[sample_key]) > LIVE_COUNT_LIMIT:
        return sample[sample_key], sample["time"]
    cached = _live_cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < LIVE_CACHE_SECONDS:
        return cached[1], cached[2]
    value = count()
    if size(value) > LIVE_COUNT_LIMIT:
        _live_cache[key] = (time.monotonic(), value, utcnow())
    else:
        _live_cache.pop(key, None)
    return value, None


def queue_counts(sample: dict | None) -> Counts:
    """Pending, processing and failed items: live, or from the sample when large."""
    counts = Counts({})
    for state in ACTIVE_STATES:
        value, as_of = _counted(f"queue:{state}", sample, state,
                                lambda state=state: _queue().count_documents({"status": state}), int)
        counts.values[state] = int(value)
        if as_of is not None:
            counts.sampled.add(state)
            counts.as_of = as_of
    return counts


def job_counts_live(model: str) -> dict:
    """Job counts without reading the embedded jobs: all, current (model ``model``), by model, failed, text changed.

    Current = all - every other embedding state, because those sets are small
    and counting the large one would decode every job's vector.
    """
    jobs = _jobs()
    total = jobs.estimated_document_count()
    other: dict[str, int] = {}
    for state in ("pending", "processing", "failed", None):
        other[str(state)] = jobs.count_documents({"embedding.status": state})
    by_model: dict[str, int] = {}
    # Completed by other models: two range reads of the (embedding.status, embedding.model) index, no $ne scan.
    for bound in ("$lt", "$gt"):
        for row in jobs.aggregate([
                {"$match": {"embedding.status": "completed", "embedding.model": {bound: model}}},
                {"$group": {"_id": "$embedding.model", "n": {"$sum": 1}}}]):
            by_model[str(row["_id"])] = int(row["n"])
    unnamed = jobs.count_documents({"embedding.status": "completed", "embedding.model": None})
    current = max(total - sum(other.values()) - sum(by_model.values()) - unnamed, 0)
    if current:
        by_model[model] = current
    active, active_current = active_counts(model, total)
    return {"jobsTotal": total, "jobsCurrent": current, "jobsActive": active, "jobsActiveCurrent": active_current,
            "jobsByModel": by_model, "jobsFailed": other["failed"],
            # update_job marks an embedded job pending when its text changes; the old vector stays.
            "jobsTextChanged": jobs.count_documents({"embedding.status": "pending",
                                                     "embedding.vector": {"$exists": True}})}


def active_counts(model: str, total: int) -> tuple[int, int]:
    """(active jobs, active jobs with a current embedding of ``model``): coverage is over active jobs only.

    Both are taken as the large set minus small ones, read through indexes: the
    jobs of other statuses, and the active jobs not embedded by ``model``.
    """
    jobs = _jobs()
    inactive = sum(jobs.count_documents(query) for query in (
        {"status": {"$lt": "active"}}, {"status": {"$gt": "active"}}, {"status": None}))
    active = max(total - inactive, 0)
    not_current = sum(jobs.count_documents({"status": "active", **query}) for query in (
        {"embedding.status": {"$in": ["pending", "processing", "failed"]}}, {"embedding.status": None},
        {"embedding.status": "completed", "embedding.model": {"$lt": model}},
        {"embedding.status": "completed", "embedding.model": {"$gt": model}},
        {"embedding.status": "completed", "embedding.model": None}))
    return active, max(active - not_current, 0)


def coverage_percent(active_current: int, active: int) -> float:
    """Share of active jobs with a current embedding, in percent (0 with no active jobs)."""
    return round(active_current / active * 100, 2) if active else 0.0


def coverage_figures(counts: dict) -> dict:
    """total, current, active, activeCurrent and coverage from job counts (live or a sample's)."""
    total, current = int(counts.get("jobsTotal") or 0), int(counts.get("jobsCurrent") or 0)
    active, active_current = counts.get("jobsActive"), counts.get("jobsActiveCurrent")
    if active is None or active_current is None:     # a sample written before coverage was over active jobs
        active, active_current = total, current
    return {"total": total, "current": current, "active": int(active), "activeCurrent": int(active_current),
            "coverage": coverage_percent(int(active_current), int(active))}


def job_counts(settings: dict, sample: dict | None) -> dict:
    """Coverage (current embeddings over all jobs, and by model), failed and changed; large ones from the sample."""
    model = provider_model(settings)
    counts, as_of = _counted(f"jobs:{model}", sample if sample and sample.get("jobsCurrent") is not None else None,
                             "jobsTotal", lambda: job_counts_live(model),
                             lambda v: v if isinstance(v, int) else v["jobsTotal"])
    if isinstance(counts, int):   # taken from the sample: the sample holds the rest too
        counts = {k: sample.get(k) for k in ("jobsTotal", "jobsCurrent", "jobsActive", "jobsActiveCurrent",
                                             "jobsByModel", "jobsFailed", "jobsTextChanged")}
    return {**coverage_figures(counts), "model": model,
            "byModel": dict(sorted((counts["jobsByModel"] or {}).items(), key=lambda kv: -kv[1])),
            "failed": counts.get("jobsFailed") or 0, "textChanged": counts.get("jobsTextChanged") or 0,
            "approx": as_of is not None, "asOf": as_of}


# ----- workers ---------------------------------------------------------------------------------

def heartbeat_level(age_seconds: float, state: str, settings: dict) -> str:
    """ok, stale (missed a beat), dead (past WORKER_DEAD_THRESHOLD) or stopped."""
    if state == "stopped":
        return "stopped"
    dead = settings["WORKER_DEAD_THRESHOLD"] / 1000
    stale = min(settings["WORKER_HEARTBEAT_INTERVAL"] * 1.5 / 1000, dead)
    if age_seconds > dead:
        return "dead"
    if age_seconds > stale:
        return "stale"
    return "ok"


def held_items() -> dict[str, int]:
    """Processing items per owning worker."""
    return {row["_id"]: int(row["n"]) for row in _queue().aggregate([
        {"$match": {"status": "processing"}}, {"$group": {"_id": "$lockedBy", "n": {"$sum": 1}}}])
        if row["_id"]}


def workers(settings: dict, now: datetime | None = None, limit: int = 200) -> list[dict]:
    """Every known worker, newest heartbeat first, with its heartbeat level and the items it holds."""
    now = now or utcnow()
    held = held_items()
    rows = []
    for doc in WorkerStatus._get_collection().find({}).sort("lastHeartbeat", -1).limit(limit):
        beat = doc.get("lastHeartbeat") or doc.get("startedAt") or now
        age = max((now - beat).total_seconds(), 0.0)
        memory = doc.get("memory") or {}
        batch = doc.get("currentBatch") or {}
        rows.append({
            "workerId": doc.get("workerId"), "host": doc.get("host"), "pid": doc.get("pid"),
            "state": doc.get("state") or "running", "reason": doc.get("reason") or "",
            "level": heartbeat_level(age, doc.get("state") or "running", settings),
            "heartbeatAge": round(age, 1), "lastHeartbeat": beat, "startedAt": doc.get("startedAt"),
            "provider": doc.get("provider"), "model": doc.get("model"),
            "memoryMB": round((memory.get("rss") or 0) / 2**20, 1), "memoryFraction": memory.get("fraction"),
            "processed": int(doc.get("processed") or 0), "failed": int(doc.get("failed") or 0),
            "tokens": int(doc.get("tokensUsed") or 0), "indexSize": int(doc.get("indexSize") or 0),
            "batch": {"id": batch.get("id"), "size": batch.get("size"), "startedAt": batch.get("startedAt")}
            if batch else None,
            "held": held.get(doc.get("workerId"), 0),
        })
    return rows


def alive_workers(settings: dict, now: datetime | None = None) -> int:
    """Workers with a heartbeat within WORKER_DEAD_THRESHOLD that have not stopped."""
    now = now or utcnow()
    cutoff = now - timedelta(milliseconds=settings["WORKER_DEAD_THRESHOLD"])
    return WorkerStatus._get_collection().count_documents(live_query(cutoff))


def worker_summary(rows: list[dict]) -> dict:
    """How many workers are alive (ok or stale), stale, dead and stopped."""
    levels = [r["level"] for r in rows]
    return {"alive": sum(level in ("ok", "stale") for level in levels), "stale": levels.count("stale"),
            "dead": levels.count("dead"), "stopped": levels.count("stopped"),
            "deadHolding": sum(r["held"] for r in rows if r["level"] in ("dead", "stopped"))}


# ----- activity --------------------------------------------------------------------------------

def finished_since(status: str, since: datetime) -> int:
    """Items that reached ``status`` since ``since`` (index ``status, finishedAt``)."""
    return _queue().count_documents({"status": status, "finishedAt": {"$gte": since}})


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
        docs = list(_queue().find(query, QUEUE_FIELDS).sort("finishedAt", -1).limit(limit))
        if len(docs) >= limit:
            break
    return with_titles(docs)


def with_titles(items: list[dict]) -> list[dict]:
    """Queue items with ``jobTitle`` set from their jobs (one indexed read)."""
    ids = list({i["jobId"] for i in items if i.get("jobId")})
    titles = {j["_id"]: j.get("title") for j in _jobs().find({"_id": {"$in": ids}}, {"title": 1})} if ids else {}
    for item in items:
        item["jobTitle"] = titles.get(item.get("jobId"))
    return items


# ----- overview --------------------------------------------------------------------------------

def overview(settings: dict, now: datetime | None = None) -> dict:
    """Everything the overview page and ``/api/admin/embeddings/status`` show, from bounded queries."""
    now = now or utcnow()
    sample = samples.latest_sample(now)
    counts = queue_counts(sample)
    rows = workers(settings, now)
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
    alerts += [a for a in live if a["key"] not in seen]
    return sorted(alerts, key=lambda a: a["level"] != "bad")


def stored_open_alerts() -> list[dict]:
    """The open alerts of the alert rules (jobflow.alerts), as overview entries."""
    from ..models import Alert
    return [{"key": a["key"], "level": "bad" if a.get("severity") == "critical" else "warn",
             "title": a.get("title") or a["key"], "detail": a.get("summary") or "", "since": a.get("openedAt"),
             "page": a.get("page"), "stored": True}
            for a in Alert._get_collection().find({"status": "open"}).limit(50)]


# ----- health ----------------------------------------------------------------------------------

HEALTH_SAMPLE_AGE = timedelta(hours=1)   # health reads large counts from a sample up to this old


def health(settings: dict, now: datetime | None = None) -> dict:
    """The seed's health report; ``reasons`` says why it is degraded. Raises PyMongoError when the database fails.

    Large counts come from a sample up to an hour old (a health check must
    answer in about two seconds, and with no worker there is no fresh one).
    """
    now = now or utcnow()
    sample = samples.latest_sample(now, HEALTH_SAMPLE_AGE)
    return health_report(settings, now, queue_counts(sample), job_counts(settings, sample),
                         alive_workers(settings, now))


def health_report(settings: dict, now: datetime, counts: Counts, jobs: dict, active: int,
                  extra_reasons: tuple[str, ...] = ()) -> dict:
    """The health body from the figures: healthy, or degraded with the reasons."""
    from ..timeutil import iso
    reasons = list(extra_reasons)
    if active == 0:
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


# ----- queue -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class QueueFilter:
    """What the queue page shows: a state, a task, and a job id or title."""
    status: str | None = None
    task: str | None = None
    q: str | None = None

    @classmethod
    def from_args(cls, args) -> "QueueFilter":
        """A filter from query arguments; unknown states and tasks are ignored."""
        status = args.get("status") or None
        task = args.get("task") or None
        q = (args.get("q") or "").strip()[:200] or None
        return cls(status if status in QUEUE_STATUSES else None, task if task in TASK_TYPES else None, q)

    def args(self) -> dict:
        """The filter as query arguments."""
        return {k: v for k, v in (("status", self.status), ("task", self.task), ("q", self.q)) if v}

    def describe(self) -> str:
        """The filter in words, for confirmations and the audit log."""
        parts = [self.status or "any state"]
        if self.task:
            parts.append(f"task {self.task}")
        if self.q:
            parts.append(f"matching {self.q!r}")
        return ", ".join(parts)

    def failed_query(self) -> dict | None:
        """The query of the failed items this filter shows (for "retry all matching"); None if it shows none."""
        if self.status not in (None, "failed"):
            return None
        query: dict = {}
        if self.task:
            query["taskType"] = self.task
        if self.q:
            query["_id"] = {"$in": [d["_id"] for d in _search_items(self, "failed")]}
        return query


def search_job_ids(q: str, limit: int = 200) -> list[ObjectId]:
    """Jobs whose id is ``q`` or whose title starts with ``q`` (case-insensitive, indexed)."""
    oid = parse_oid(q)
    if oid is not None:
        return [oid]
    return [j["_id"] for j in _title_prefix(q, {"_id": 1}, limit)]


def _title_prefix(q: str, projection: dict, limit: int) -> list[dict]:
    q = q.strip()
    if not q:
        return []
    return list(_jobs().find({"title": {"$gte": q, "$lt": q + "\uffff"}}, projection,
                             collation=CASE_INSENSITIVE).limit(limit))


def _search_items(flt: QueueFilter, status: str | None, limit: int = 1000) -> list[dict]:
    """Items of the jobs matching ``flt.q`` (or the item with that id), newest first; no $or, each read indexed."""
    ids = search_job_ids(flt.q or "")
    item_id = parse_oid(flt.q)
    found: dict[ObjectId, dict] = {}
    for query in ([{"jobId": {"$in": ids}}] if ids else []) + ([{"_id": item_id}] if item_id else []):
        if status:
            query["status"] = status
        if flt.task:
            query["taskType"] = flt.task
        for doc in _queue().find(query, QUEUE_FIELDS).limit(limit):
            found[doc["_id"]] = doc
    return sorted(found.values(), key=lambda d: d["_id"], reverse=True)


def _windowed(base: dict, before: ObjectId | None, after: ObjectId | None, limit: int,
              now: datetime) -> list[dict]:
    """Up to ``limit`` items matching ``base`` next to the cursor, read in growing ``_id`` windows."""
    direction = 1 if after is not None else -1
    anchor = (after or before).generation_time if (after or before) else now
    docs: list[dict] = []
    for span in WINDOWS:
        cond: dict = {}
        if after is not None:
            cond["$gt"] = after
            if span is not None:
                cond["$lt"] = ObjectId.from_datetime(anchor + span)
        else:
            if before is not None:
                cond["$lt"] = before
            if span is not None:
                cond["$gte"] = ObjectId.from_datetime(anchor - span)
        query = dict(base)
        if cond:
            query["_id"] = cond
        docs = list(_queue().find(query, QUEUE_FIELDS).sort("_id", direction).limit(limit))
        if len(docs) >= limit:
            break
    return docs


@dataclass
class QueuePage:
    """One page of queue items, newest first, with cursors to the older and newer pages."""
    items: list[dict]
    older: str | None
    newer: str | None


def queue_page(flt: QueueFilter, before: str | None = None, after: str | None = None, limit: int = PAGE_SIZE,
               now: datetime | None = None) -> QueuePage:
    """Items matching the filter, newest first, a keyset page before (or after) a cursor id."""
    now = now or utcnow()
    before_id, after_id = parse_oid(before), parse_oid(after)
    if flt.q:
        docs = _search_items(flt, flt.status)
        if before_id:
            docs = [d for d in docs if d["_id"] < before_id]
        if after_id:
            docs = [d for d in docs if d["_id"] > after_id][-limit - 1:]
        has_more = len(docs) > limit
        page = docs[:limit] if not after_id else docs[-limit:]
    else:
        states = [flt.status] if flt.status else list(QUEUE_STATUSES)
        merged: list[dict] = []
        for state in states:
            base = {"status": state}
            if flt.task:
                base = {"taskType": flt.task, "status": state}
            merged += _windowed(base, before_id, after_id, limit + 1, now)
        merged.sort(key=lambda d: d["_id"], reverse=after_id is None)
        has_more = len(merged) > limit
        page = merged[:limit]
        if after_id:
            page.reverse()
    older = str(page[-1]["_id"]) if page and (has_more or after_id) else None
    newer = str(page[0]["_id"]) if page and (before_id or (after_id and has_more)) else None
    return QueuePage(with_titles(page), older, newer)


def queue_item(item_id: str) -> dict | None:
    """One queue item with its whole error history and its job's title."""
    oid = parse_oid(item_id)
    doc = _queue().find_one({"_id": oid}) if oid else None
    return with_titles([doc])[0] if doc else None


# ----- failures --------------------------------------------------------------------------------

_SIGNATURE_RULES = [
    (re.compile(r"\b[0-9a-f]{24}\b"), "<id>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (re.compile(r"(?i)\b(req|request|trace)([-_ ]?id[:= ]+)[\w.-]+"), r"\1\2<id>"),
    (re.compile(r"https?://\S+"), "<url>"),
    (re.compile(r"'[^']{0,200}'|\"[^\"]{0,200}\""), "'…'"),
    (re.compile(r"\b0x[0-9a-f]+\b|\b[0-9a-f]{12,}\b", re.I), "<hex>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
]


def error_signature(message: str | None) -> str:
    """The error with ids, numbers, URLs and quoted values taken out, so alike failures group together."""
    text = (message or "(no error recorded)").strip()
    for pattern, replacement in _SIGNATURE_RULES:
        text = pattern.sub(replacement, text)
    return text[:200]


def _failed_by_error(match: dict, extra: dict | None = None) -> dict:
    rows = _queue().aggregate([{"$match": {"status": "failed", **match}},
                               {"$group": {"_id": "$lastError", "n": {"$sum": 1}, **(extra or {})}}])
    return {row["_id"]: row for row in rows}


def failure_groups(now: datetime | None = None) -> list[dict]:
    """Failed items grouped by error signature, with counts in the last hour, day and week; busiest first.

    One pass over the failed items for the totals, then the recent ones by
    the ``status, finishedAt`` index: the last hour and day are small sets,
    and the week is the total less the (usually few) older failures.
    """
    now = now or utcnow()
    totals = _failed_by_error({}, {"last": {"$max": "$finishedAt"}, "tasks": {"$addToSet": "$taskType"}})
    hour = _failed_by_error({"finishedAt": {"$gte": now - timedelta(hours=1)}})
    day = _failed_by_error({"finishedAt": {"$gte": now - timedelta(days=1)}})
    older = _failed_by_error({"finishedAt": {"$lt": now - timedelta(days=7)}})
    groups: dict[str, dict] = {}
    for message, row in totals.items():
        signature = error_signature(message)
        group = groups.setdefault(signature, {"signature": signature, "example": message or "", "count": 0,
                                              "hour": 0, "day": 0, "week": 0, "last": None, "tasks": set(),
                                              "messages": []})
        n = int(row["n"])
        group["count"] += n
        group["hour"] += int(hour.get(message, {}).get("n", 0))
        group["day"] += int(day.get(message, {}).get("n", 0))
        group["week"] += n - int(older.get(message, {}).get("n", 0))
        group["messages"].append(message)
        group["tasks"].update(t for t in row.get("tasks") or [] if t)
        if row.get("last") and (group["last"] is None or row["last"] > group["last"]):
            group["last"], group["example"] = row["last"], message or ""
    result = sorted(groups.values(), key=lambda g: (-g["hour"], -g["day"], -g["week"], -g["count"]))
    for group in result:
        group["tasks"] = sorted(group["tasks"])
    return result


def failure_group(signature: str, now: datetime | None = None) -> dict | None:
    """One failure group by its signature, or None when no failed item has it (any more)."""
    return next((g for g in failure_groups(now) if g["signature"] == signature), None)


# ----- jobs ------------------------------------------------------------------------------------

JOB_LIST_FIELDS = {"title": 1, "company": 1, "status": 1, "createdAt": 1, "embedding.status": 1,
                   "embedding.model": 1, "embedding.tokens": 1, "similarJobs": {"$slice": 0}}


SUBSTRING_SEARCH_MS = 1500   # a title's middle cannot use the index: bound the scan


def search_jobs(q: str, limit: int = 20) -> list[dict]:
    """Jobs by id, external id, title prefix (indexed), then words anywhere in the title (bounded scan)."""
    q = (q or "").strip()[:200]
    if not q:
        return []
    oid = parse_oid(q)
    if oid is not None:
        return list(_jobs().find({"_id": oid}, JOB_LIST_FIELDS))
    found = {d["_id"]: d for d in _jobs().find({"externalId": q}, JOB_LIST_FIELDS).limit(limit)}
    for doc in _title_prefix(q, JOB_LIST_FIELDS, limit):
        found.setdefault(doc["_id"], doc)
    if len(found) < limit:
        # "Nurse" should find "Registered Nurse": a scan of titles, stopped at the page size or the time limit.
        pattern = {"title": {"$regex": re.escape(q), "$options": "i"}, "_id": {"$nin": list(found)}}
        try:
            for doc in _jobs().find(pattern, JOB_LIST_FIELDS).limit(limit - len(found)).max_time_ms(SUBSTRING_SEARCH_MS):
                found.setdefault(doc["_id"], doc)
        except ExecutionTimeout:
            pass
    return list(found.values())[:limit]


def job_detail(job_id: str, settings: dict) -> dict | None:
    """A job's embedding status, whether it is current, its similar jobs with titles, and its queue items."""
    oid = parse_oid(job_id)
    job = _jobs().find_one({"_id": oid}, {"embedding.vector": 0}) if oid else None
    if job is None:
        return None
    embedding = job.get("embedding") or {}
    model = provider_model(settings)
    similar = job.get("similarJobs") or []
    titles = {d["_id"]: d for d in _jobs().find({"_id": {"$in": [s.get("jobId") for s in similar]}},
                                                {"title": 1, "company": 1, "status": 1})} if similar else {}
    items = with_titles(list(_queue().find({"jobId": oid}).sort("_id", -1).limit(10)))
    return {
        "job": job,
        "embedding": embedding,
        "current": embedding.get("status") == "completed" and embedding.get("model") == model,
        "textChanged": bool(embedding.get("textHash")) and embedding.get("textHash") != text_hash(job_text(job)),
        "model": model,
        "similar": [{"jobId": s.get("jobId"), "score": s.get("score"),
                     "title": (titles.get(s.get("jobId")) or {}).get("title"),
                     "company": (titles.get(s.get("jobId")) or {}).get("company")} for s in similar],
        "queueItems": items,
    }
