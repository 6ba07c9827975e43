"""The per-minute metric sample the worker writes, and its hour and day roll-ups.

The worker calls ``record_sample(settings)`` every 10 s (schedule table: SAMPLE_EVERY_MS).
Each call writes the sample of the minute that just ended; with several
workers the first to insert that minute's document does the counting and the
others return at once (unique ``span, time``). The same call rolls the
previous hour and the previous day up, once, so charts over days and the
monthly token cost read a few dozen documents. Minute samples expire after
METRICS_RETENTION_DAYS, hour and day samples after a year and a month.

The sample also carries the counts that are expensive to take on a large
database (queue states, job coverage); pages use them when they are large.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from pymongo.errors import DuplicateKeyError

from .. import pacing
from ..embeddings import provider_model
from ..models import Job, MetricSample, QueueItem
from ..models.metric import HOUR_RETENTION_DAYS
from ..timeutil import utcnow
from .counts import ACTIVE_STATES, job_counts_live
from .samples import DAY, HOUR, MINUTE, floor_day, floor_hour, floor_minute, read
from .workers import alive_workers

LATENCY_SAMPLE_LIMIT = 20000   # enough completions for a stable p95 in any one span
ACTIVITY_SLICES = 6            # a minute's activity is read ten seconds at a time
PEAK_FIELDS = ("pending", "processing", "failed", "workersAlive")


def _samples():
    return MetricSample._get_collection()


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def activity(start: datetime, end: datetime, slices: int = ACTIVITY_SLICES) -> dict:
    """Completions, final failures, queue latency (createdAt to finishedAt, p50/p95 ms) and tokens in [start, end).

    Read a slice of the minute at a time (each query gathers only that slice's items and jobs), with a
    draining worker giving way to the API's reads between them (pacing): at 3,000 jobs a minute, one query
    over the whole minute holds the embedded database's readers back for about 0.3 s.
    """
    queue, jobs = QueueItem._get_collection(), Job._get_collection()
    step = (end - start) / slices
    latencies: list[float] = []
    completed = failures = tokens = 0
    for n in range(slices):
        window = {"$gte": start + step * n, "$lt": end if n == slices - 1 else start + step * (n + 1)}
        pacing.give_way()
        for d in queue.find({"status": "completed", "finishedAt": window}, {"createdAt": 1, "finishedAt": 1}):
            completed += 1
            if d.get("createdAt") and d.get("finishedAt") and len(latencies) < LATENCY_SAMPLE_LIMIT:
                latencies.append((d["finishedAt"] - d["createdAt"]).total_seconds() * 1000)
        failures += queue.count_documents({"status": "failed", "finishedAt": window})
        pacing.give_way()
        tokens += next(jobs.aggregate([
            {"$match": {"embedding.generatedAt": window}},
            {"$group": {"_id": None, "tokens": {"$sum": "$embedding.tokens"}}}]), {}).get("tokens", 0) or 0
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    return {"completed": completed, "failures": failures,
            "p50Ms": None if p50 is None else round(p50, 1), "p95Ms": None if p95 is None else round(p95, 1),
            "tokens": int(tokens)}


def _claim(span: str, time: datetime, expires: datetime) -> bool:
    """Insert the placeholder of a sample; False when another process already has it."""
    try:
        _samples().insert_one({"span": span, "time": time, "done": False, "expiresAt": expires})
        return True
    except DuplicateKeyError:
        return False


def _queue_count(state: str) -> int:
    pacing.give_way()           # in a draining worker: the API's reads catch up between the sample's counts
    return QueueItem._get_collection().count_documents({"status": state})


def record_sample(settings: dict, now: datetime | None = None) -> dict | None:
    """Write the sample of the minute that just ended, then roll up the last hour and day; None if another did."""
    now = now or utcnow()
    end = floor_minute(now)
    start = end - MINUTE
    if not _claim("1m", start, start + timedelta(days=settings["METRICS_RETENTION_DAYS"])):
        return None
    values = {**activity(start, end),
              **{state: _queue_count(state) for state in ACTIVE_STATES},
              "workersAlive": alive_workers(settings, end),
              **job_counts_live(provider_model(settings))}
    _samples().update_one({"span": "1m", "time": start}, {"$set": {**values, "done": True}})
    roll_up_hour(floor_hour(end) - HOUR)
    roll_up_day(floor_day(end) - DAY)
    return values


def roll_up_hour(hour: datetime) -> bool:
    """Write the hour sample of the hour starting at ``hour`` unless it exists; True if written now."""
    if not _claim("1h", hour, hour + timedelta(days=HOUR_RETENTION_DAYS)):
        return False
    minutes = read("1m", hour, hour + HOUR, {**{k: 1 for k in PEAK_FIELDS}, "done": 1, "time": 1})
    peaks = {key: max((m.get(key) or 0 for m in minutes), default=0) for key in PEAK_FIELDS}
    _samples().update_one({"span": "1h", "time": hour}, {"$set": {**activity(hour, hour + HOUR), **peaks,
                                                                   "done": True}})
    return True


def roll_up_day(day: datetime) -> bool:
    """Write the day sample (sums and peaks of its hour samples) unless it exists; True if written now."""
    if not _claim("1d", day, day + timedelta(days=HOUR_RETENTION_DAYS)):
        return False
    hours = read("1h", day, day + DAY)
    values = {key: sum(h.get(key) or 0 for h in hours) for key in ("completed", "failures", "tokens")}
    values.update({key: max((h.get(key) or 0 for h in hours), default=0) for key in PEAK_FIELDS})
    p95 = [h["p95Ms"] for h in hours if h.get("p95Ms") is not None]
    p50 = [h["p50Ms"] for h in hours if h.get("p50Ms") is not None]
    values.update(p95Ms=max(p95) if p95 else None, p50Ms=sorted(p50)[len(p50) // 2] if p50 else None)
    _samples().update_one({"span": "1d", "time": day}, {"$set": {**values, "hours": len(hours), "done": True}})
    return True
