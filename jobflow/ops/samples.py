"""The per-minute metric samples: written by the worker, read by the pages, health, the alerts and ``/metrics``.

``record_sample`` (every 10 s, any worker) writes the sample of the minute that
just ended, once (the first worker to insert it counts; unique ``span, time``),
and rolls the previous hour and day up. A sample carries the counts that are
expensive on a large database; pages use them when they are large.

Reads are few and small: a period is covered by day, hour and minute samples
(coarsest first), so a month costs about thirty documents, a day about
eighty-four. Filters name only indexed fields (``span, time``); the ``done``
flag is checked here, because an unindexed field in a filter would make the
embedded database scan every sample.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from pymongo.errors import DuplicateKeyError

from jobflow.db import commands
from jobflow.embeddings import provider_model
from jobflow.models import CaptureState, Job, MetricSample, QueueItem
from jobflow.models.metric_sample import HOUR_RETENTION_DAYS
from jobflow.ops.capture_status import lag_figures
from jobflow.ops.counts import ACTIVE_STATES, job_counts_live
from jobflow.ops.workers import alive_workers
from jobflow.timeutil import utcnow

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
SPAN_LENGTH = {"1m": MINUTE, "1h": HOUR, "1d": DAY}
FRESH = timedelta(minutes=3)   # a sample older than this does not stand in for a live count
LATENCY_SAMPLE_LIMIT = 20000   # enough completions for a stable p95 in any one span
ACTIVITY_SLICES = 6            # a minute's activity is read ten seconds at a time
PEAK_FIELDS = ("pending", "processing", "failed", "workersAlive")


def _samples():
    return MetricSample._get_collection()


def floor_minute(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)


def floor_hour(when: datetime) -> datetime:
    return when.replace(minute=0, second=0, microsecond=0)


def floor_day(when: datetime) -> datetime:
    return when.replace(hour=0, minute=0, second=0, microsecond=0)


def read(span: str, start: datetime, end: datetime, fields: dict | None = None) -> list[dict]:
    """Complete samples of one span with ``start <= time < end``, oldest first."""
    rows = _samples().find({"span": span, "time": {"$gte": start, "$lt": end}}, fields)
    return sorted((r for r in rows if r.get("done")), key=lambda r: r["time"])


def latest_sample(now: datetime | None = None, max_age: timedelta = FRESH) -> dict | None:
    """The newest complete minute sample if it is recent enough (``max_age``) to stand in for a count."""
    now = now or utcnow()
    rows = read("1m", now - max_age, now + MINUTE)
    return rows[-1] if rows else None


def _ceil(when: datetime, step: timedelta, floor) -> datetime:
    floored = floor(when)
    return floored if floored == when else floored + step


def _gaps(start: datetime, end: datetime, covered: set[datetime], step: timedelta,
          floor) -> list[tuple[datetime, datetime]]:
    """The parts of [start, end) outside the covered steps (hours or days), adjacent parts merged."""
    gaps: list[tuple[datetime, datetime]] = []
    slot = floor(start)
    while slot < end:
        if slot not in covered:
            gap = (max(slot, start), min(slot + step, end))
            if gaps and gaps[-1][1] == gap[0]:
                gaps[-1] = (gaps[-1][0], gap[1])
            else:
                gaps.append(gap)
        slot += step
    return gaps


def covering(start: datetime, end: datetime, fields: dict | None = None, days: bool = True) -> list[dict]:
    """Samples covering [start, end) without overlap: whole days (if ``days``), then whole hours, then minutes.

    Each finer span is read only for the stretches the coarser ones leave open.
    """
    fields = None if fields is None else {**fields, "time": 1, "span": 1, "done": 1}
    rows: list[dict] = []
    covered_days: set[datetime] = set()
    first_day, last_day = _ceil(start, DAY, floor_day), floor_day(end)
    if days and first_day < last_day:
        for row in read("1d", first_day, last_day, fields):
            rows.append(row)
            covered_days.add(row["time"])
    covered_hours = {day + HOUR * i for day in covered_days for i in range(24)}
    if end - start > timedelta(hours=3):
        for gap_start, gap_end in _gaps(start, end, covered_days, DAY, floor_day):
            first_hour, last_hour = _ceil(gap_start, HOUR, floor_hour), floor_hour(gap_end)
            if first_hour < last_hour:
                for row in read("1h", first_hour, last_hour, fields):
                    rows.append(row)
                    covered_hours.add(row["time"])
    for gap_start, gap_end in _gaps(start, end, covered_hours, HOUR, floor_hour):
        rows += read("1m", gap_start, gap_end, fields)
    return sorted(rows, key=lambda r: r["time"])


def totals(start: datetime, end: datetime | None = None) -> dict | None:
    """Completed, failures and tokens summed over [start, end); None when there is no sample at all."""
    rows = covering(start, end or utcnow(), {"completed": 1, "failures": 1, "tokens": 1})
    if not rows:
        return None
    return {"completed": sum(r.get("completed") or 0 for r in rows),
            "failures": sum(r.get("failures") or 0 for r in rows),
            "tokens": sum(r.get("tokens") or 0 for r in rows),
            "minutes": sum(SPAN_LENGTH[r["span"]] / MINUTE for r in rows),
            "busyMinutes": sum(SPAN_LENGTH[r["span"]] / MINUTE for r in rows if r.get("completed"))}


# ----- charts ------------------------------------------------------------------------------------

RANGES = {
    # name: (label, length, bucket)
    "3h": ("3 hours", timedelta(hours=3), MINUTE * 2),
    "24h": ("24 hours", timedelta(hours=24), HOUR),
    "7d": ("7 days", timedelta(days=7), HOUR * 2),
    "30d": ("30 days", timedelta(days=30), HOUR * 8),
}
CHART_FIELDS = {"completed": 1, "failures": 1, "pending": 1, "p50Ms": 1, "p95Ms": 1}


def buckets(range_name: str, now: datetime | None = None) -> dict:
    """The range's samples in equal buckets: throughput and failures per minute, peak depth, latency in seconds."""
    label, length, size = RANGES[range_name]
    now = now or utcnow()
    end = floor_minute(now)
    start = end - length
    count = int(length / size)
    groups: list[list[dict]] = [[] for _ in range(count)]
    # Day samples are too coarse for any chart: hours (beyond three hours) and minutes.
    for row in covering(start, end, CHART_FIELDS, days=False):
        index = int((row["time"] - start) / size)
        if 0 <= index < count:
            groups[index].append(row)

    def per_minute(group, key):
        minutes = sum(SPAN_LENGTH[r["span"]] / MINUTE for r in group)
        return sum(r.get(key) or 0 for r in group) / minutes if group else None

    def peak(group, key):
        values = [r.get(key) for r in group if r.get(key) is not None]
        return max(values) if values else None

    def mean(group, key):
        values = [r.get(key) for r in group if r.get(key) is not None]
        return sum(values) / len(values) if values else None
    return {
        "range": range_name, "label": label, "start": start, "end": end,
        "times": [start + size * i for i in range(count)], "samples": sum(len(g) for g in groups),
        "throughput": [per_minute(g, "completed") for g in groups],
        "failures": [per_minute(g, "failures") for g in groups],
        "pending": [peak(g, "pending") for g in groups],
        "p50": [None if (v := mean(g, "p50Ms")) is None else v / 1000 for g in groups],
        "p95": [None if (v := peak(g, "p95Ms")) is None else v / 1000 for g in groups],
    }


# ----- tokens and cost ---------------------------------------------------------------------------

def price_per_million(settings: dict) -> float:
    """What a million tokens cost with the configured provider (0 for the local model)."""
    if settings["EMBEDDING_PROVIDER"] != "openai":
        return 0.0
    try:
        from jobflow.embeddings.openai_provider import PRICE_PER_MILLION
    except ImportError:
        return 0.0
    return float(PRICE_PER_MILLION.get(settings["OPENAI_EMBEDDING_MODEL"], 0.0))


def usage(settings: dict, now: datetime | None = None, days: int = 30) -> dict:
    """Tokens and estimated cost per day (the last ``days`` days), this month and last month."""
    now = now or utcnow()
    today = floor_day(now)
    month_start = today.replace(day=1)
    last_month_start = (month_start - DAY).replace(day=1)
    since = min(last_month_start, today - DAY * (days - 1))
    by_day: dict[datetime, int] = {}
    for row in covering(since, now, {"tokens": 1}):
        day = floor_day(row["time"])
        by_day[day] = by_day.get(day, 0) + (row.get("tokens") or 0)
    price = price_per_million(settings)

    def cost(tokens: int) -> float:
        return tokens * price / 1_000_000
    series = [{"day": today - DAY * i, "tokens": by_day.get(today - DAY * i, 0)} for i in range(days - 1, -1, -1)]
    for entry in series:
        entry["cost"] = cost(entry["tokens"])
    month = sum(t for d, t in by_day.items() if d >= month_start)
    last_month = sum(t for d, t in by_day.items() if last_month_start <= d < month_start)
    return {"days": series, "today": by_day.get(today, 0), "todayCost": cost(by_day.get(today, 0)),
            "month": month, "monthCost": cost(month), "lastMonth": last_month, "lastMonthCost": cost(last_month),
            "pricePerMillion": price, "model": provider_model(settings)}


# ----- writing: the worker's sample of each minute, and the hour and day roll-ups ---------------------
def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def activity(start: datetime, end: datetime, slices: int = ACTIVITY_SLICES) -> dict:
    """Completions, final failures, queue latency (createdAt to finishedAt, p50/p95 ms) and tokens in [start, end).

    Read a slice at a time, giving way to the API's reads between slices: one query over a busy minute
    would hold the embedded database's readers back.
    """
    queue, jobs = QueueItem._get_collection(), Job._get_collection()
    step = (end - start) / slices
    latencies: list[float] = []
    completed = failures = tokens = 0
    for n in range(slices):
        window = {"$gte": start + step * n, "$lt": end if n == slices - 1 else start + step * (n + 1)}
        commands.give_way()
        for d in queue.find({"status": "completed", "finishedAt": window}, {"createdAt": 1, "finishedAt": 1}):
            completed += 1
            if d.get("createdAt") and d.get("finishedAt") and len(latencies) < LATENCY_SAMPLE_LIMIT:
                latencies.append((d["finishedAt"] - d["createdAt"]).total_seconds() * 1000)
        failures += queue.count_documents({"status": "failed", "finishedAt": window})
        commands.give_way()
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
    commands.give_way()           # in a draining worker: the API's reads catch up between the sample's counts
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
              **job_counts_live(provider_model(settings)),
              **capture_lag(start, end)}
    _samples().update_one({"span": "1m", "time": start}, {"$set": {**values, "done": True}})
    roll_up_hour(floor_hour(end) - HOUR)
    roll_up_day(floor_day(end) - DAY)
    return values


def capture_lag(start: datetime, end: datetime) -> dict:
    """The minute's change capture lag (write to queue, ms): p50, p99, max, and the changes it handled."""
    lags = (CaptureState._get_collection().find_one({"_id": "jobs"}, {"lags": 1}) or {}).get("lags") or []
    figures = lag_figures(lags, start, end)
    return {"captureChanges": figures["count"], "captureLagP50Ms": figures["p50"], "captureLagP99Ms": figures["p99"],
            "captureLagMaxMs": figures["max"]}


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
