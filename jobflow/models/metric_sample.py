"""Per-minute and per-hour samples of the pipeline, for the dashboard charts (collection ``metricsamples``).

The worker writes one ``1m`` sample a minute (``jobflow.ops.samples.record_sample``)
and rolls each finished hour and day up into one ``1h`` and one ``1d`` sample.
Minute samples expire after METRICS_RETENTION_DAYS, hour and day samples after
HOUR_RETENTION_DAYS, so last month's token cost is always there.
"""
from mongoengine import BooleanField, DateTimeField, DictField, Document, FloatField, IntField, StringField

SPANS = ("1m", "1h", "1d")
HOUR_RETENTION_DAYS = 400


class MetricSample(Document):
    """What the pipeline did in one minute (span ``1m``), hour (``1h``) or day (``1d``)."""
    meta = {
        "collection": "metricsamples",
        "strict": False,
        "indexes": [
            {"fields": ["span", "time"], "name": "span_time", "unique": True},
            {"fields": ["expiresAt"], "name": "expire", "expireAfterSeconds": 0},
        ],
    }

    span = StringField(required=True, choices=SPANS)
    time = DateTimeField(required=True)       # start of the minute, hour or day, UTC
    done = BooleanField(default=False)        # false while the writing process is still counting
    pending = IntField(default=0)             # queue depth at the end of the span
    processing = IntField(default=0)
    failed = IntField(default=0)              # failed items in the queue at the end of the span
    completed = IntField(default=0)           # items completed during the span
    failures = IntField(default=0)            # items that failed for good during the span
    p50Ms = FloatField()                      # queue latency (createdAt -> finishedAt) of the span's completions
    p95Ms = FloatField()
    tokens = IntField(default=0)              # tokens embedded during the span
    workersAlive = IntField(default=0)
    jobsTotal = IntField()                    # job counts at sample time (minute samples only)
    jobsCurrent = IntField()
    jobsActive = IntField()                   # coverage is over active jobs
    jobsActiveCurrent = IntField()
    jobsByModel = DictField()
    jobsFailed = IntField()
    jobsTextChanged = IntField()
    expiresAt = DateTimeField()
