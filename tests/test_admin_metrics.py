"""Per-minute samples, roll-ups, chart buckets, token costs, sampled counts and chart geometry."""
from datetime import datetime, timedelta, timezone

import pytest
from bson import ObjectId

from jobflow.models import Job, MetricSample, QueueItem, WorkerStatus
from jobflow.ops import samples
from jobflow.ops.counts import job_counts, queue_counts
from jobflow.web.admin import charts

NOW = datetime(2026, 3, 10, 12, 0, 30, tzinfo=timezone.utc)


def add_done(finished, latency_seconds, status="completed"):
    QueueItem._get_collection().insert_one({
        "jobId": ObjectId(), "taskType": "generate_embedding", "status": status, "attempts": 1,
        "createdAt": finished - timedelta(seconds=latency_seconds), "finishedAt": finished, "updatedAt": finished})


def test_record_sample_once_per_minute(app):
    minute = NOW.replace(second=0) - timedelta(minutes=1)
    for i, latency in enumerate([1, 2, 3, 4, 100]):
        add_done(minute + timedelta(seconds=5 + i), latency)
    add_done(minute + timedelta(seconds=20), 5, status="failed")
    add_done(minute - timedelta(seconds=1), 999)              # the minute before: not counted
    QueueItem._get_collection().insert_one({"jobId": ObjectId(), "status": "pending", "taskType": "x"})
    Job._get_collection().insert_many([
        {"title": "a", "embedding": {"status": "completed", "model": "multilingual-e5-small", "tokens": 300,
                                     "generatedAt": minute + timedelta(seconds=1)}},
        {"title": "b", "embedding": {"status": "completed", "model": "multilingual-e5-small", "tokens": 200,
                                     "generatedAt": minute - timedelta(hours=1)}},
        {"title": "c"}])
    WorkerStatus._get_collection().insert_one({"workerId": "w", "state": "running", "lastHeartbeat": NOW})
    values = samples.record_sample(app.config, NOW)
    assert values["completed"] == 5 and values["failures"] == 1 and values["pending"] == 1
    assert values["p50Ms"] == 3000 and values["p95Ms"] == 100000
    assert values["tokens"] == 300 and values["workersAlive"] == 1
    assert values["jobsTotal"] == 3 and values["jobsCurrent"] == 2
    assert samples.record_sample(app.config, NOW + timedelta(seconds=20)) is None   # another worker did it
    sample = MetricSample.objects.get(span="1m", time=minute)
    assert sample.done and sample.expiresAt == minute + timedelta(days=14)
    # The previous hour and day were rolled up once (from the queue and the jobs, not the minutes).
    assert MetricSample.objects(span="1h").count() == 1 and MetricSample.objects(span="1d").count() == 1
    assert samples.latest_sample(NOW)["time"] == minute
    assert samples.latest_sample(NOW + timedelta(minutes=10)) is None    # stale


def test_roll_ups_and_totals_and_usage(app):
    app.config["EMBEDDING_PROVIDER"] = "openai"
    app.config["OPENAI_EMBEDDING_MODEL"] = "text-embedding-3-small"   # $0.02 per million tokens
    minute = NOW.replace(second=0)
    yesterday = minute.replace(hour=0) - timedelta(days=1)
    # Minute samples since yesterday noon; hour samples for yesterday morning (as the worker leaves them).
    docs = [{"span": "1m", "time": yesterday + timedelta(hours=12, minutes=i), "done": True, "completed": 2,
             "failures": 0, "tokens": 1000, "pending": 5, "p50Ms": 1000.0, "p95Ms": 2000.0}
            for i in range(int((minute - yesterday - timedelta(hours=12)) / timedelta(minutes=1)))]
    docs += [{"span": "1h", "time": yesterday + timedelta(hours=h), "done": True, "completed": 120, "failures": 0,
              "tokens": 60000, "pending": 5} for h in range(12)]
    MetricSample._get_collection().insert_many(docs)
    assert samples.roll_up_hour(yesterday + timedelta(hours=12))       # from the (empty) queue and jobs
    assert not samples.roll_up_hour(yesterday + timedelta(hours=12))   # once
    MetricSample._get_collection().update_one({"span": "1h", "time": yesterday + timedelta(hours=12)},
                                              {"$set": {"completed": 120, "tokens": 60000}})
    assert samples.roll_up_day(yesterday - timedelta(days=1))           # no hours: an empty day
    hour = MetricSample.objects.get(span="1h", time=yesterday + timedelta(hours=12))
    assert hour.pending == 5 and hour.done                              # peak of its minutes
    totals = samples.totals(minute - timedelta(days=1), minute)
    assert totals["completed"] == 2 * 24 * 60 and totals["minutes"] == 24 * 60
    usage = samples.usage(app.config, NOW)
    assert usage["today"] == 12 * 60000 and usage["days"][-2]["tokens"] == 24 * 60000
    assert usage["todayCost"] == pytest.approx(12 * 60000 * 0.02 / 1e6)
    assert usage["month"] == 36 * 60000 and usage["lastMonth"] == 0
    series = samples.buckets("24h", NOW)
    assert len(series["times"]) == 24 and series["throughput"][0] == pytest.approx(2.0)
    short = samples.buckets("3h", NOW)
    assert short["samples"] == 180 and short["pending"][-1] == 5 and short["p95"][-1] == pytest.approx(2.0)


def test_large_counts_come_from_the_sample(app, monkeypatch):
    from jobflow.ops import counts
    monkeypatch.setattr(counts, "LIVE_COUNT_LIMIT", 3)
    monkeypatch.setattr(counts, "_live_cache", {})
    for _ in range(2):
        QueueItem._get_collection().insert_one({"jobId": ObjectId(), "status": "failed", "taskType": "x"})
    now = datetime.now(timezone.utc)
    MetricSample._get_collection().insert_one({
        "span": "1m", "time": now.replace(second=0, microsecond=0) - timedelta(minutes=1), "done": True,
        "pending": 5000, "processing": 1, "failed": 2, "jobsTotal": 90000, "jobsCurrent": 81000,
        "jobsByModel": {"m": 81000}, "jobsFailed": 7, "jobsTextChanged": 3})
    counts = queue_counts(samples.latest_sample(now))
    assert counts.values == {"pending": 5000, "processing": 0, "failed": 2}
    assert counts.approx("pending") and not counts.approx("failed")
    jobs = job_counts(app.config, samples.latest_sample(now))
    assert jobs["total"] == 90000 and jobs["coverage"] == 90.0 and jobs["approx"]
    # Without a fresh sample a large live count is kept a minute, not recounted on every refresh.
    for _ in range(4):
        QueueItem._get_collection().insert_one({"jobId": ObjectId(), "status": "pending", "taskType": "x"})
    assert queue_counts(None)["pending"] == 4
    QueueItem._get_collection().insert_one({"jobId": ObjectId(), "status": "pending", "taskType": "x"})
    assert queue_counts(None)["pending"] == 4


def test_chart_geometry():
    assert [charts.nice_ceiling(v) for v in (0, 0.7, 3, 7, 12, 260)] == [1, 1, 5, 10, 20, 500]
    times = [NOW + timedelta(minutes=i) for i in range(4)]
    chart = charts.line_chart("Throughput", "items/min", times, [("done", "s-ok", [1, None, 3, 4])])
    line = chart.lines[0]
    assert line.path.count("M") == 2 and line.area.count("Z") == 2 and line.last == 4
    assert chart.y_ticks[-1][1] == "5" and not chart.empty
    empty = charts.line_chart("Latency", "s", times, [("p95", "s-warn", [None] * 4)])
    assert empty.empty and empty.lines[0].path == ""
    bars = charts.bar_chart([0, 5, 10], ["a", "b", "c"])
    assert bars["bars"][2].height > bars["bars"][1].height > bars["bars"][0].height == 0
