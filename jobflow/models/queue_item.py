"""A unit of background work for one job (collection ``jobqueues``)."""
from mongoengine import DateTimeField, DictField, Document, IntField, ListField, ObjectIdField, StringField

from jobflow.timeutil import utcnow

QUEUE_STATUSES = ("pending", "processing", "completed", "failed", "skipped")
FINISHED_STATUSES = ("completed", "failed", "skipped")


class QueueItem(Document):
    """A queued task. Only ``jobflow.jobs.queue`` writes its state."""
    meta = {
        "collection": "jobqueues",
        "strict": False,
        "indexes": [
            # Claim order: highest priority first, then oldest.
            {"fields": ["status", "-priority", "nextAttemptAt", "createdAt"], "name": "claim_order"},
            # At most one pending item per job and task.
            {"fields": ["jobId", "taskType"], "name": "one_pending_per_job", "unique": True,
             "partialFilterExpression": {"status": "pending"}},
            {"fields": ["status", "finishedAt"], "name": "finished"},
            # Dashboard: newest first per state, keyset pages by _id (a task filter rides on it: there is one task
            # type, and every index costs each claim and completion); items of one job.
            {"fields": ["status", "-id"], "name": "status_newest"},
            {"fields": ["jobId"], "name": "job"},
            # Alert checks: items that failed lately (sparse: an item that never failed has no entry).
            {"fields": ["errorHistory.at"], "name": "recent_errors", "sparse": True},
            # Completed and skipped items carry expiresAt; the server deletes them then.
            {"fields": ["expiresAt"], "name": "expire", "expireAfterSeconds": 0},
        ],
    }

    jobId = ObjectIdField(required=True)
    taskType = StringField(required=True, default="generate_embedding")
    status = StringField(required=True, default="pending", choices=QUEUE_STATUSES)
    priority = IntField(default=10)
    attempts = IntField(default=0)
    nextAttemptAt = DateTimeField(default=utcnow)
    lockedBy = StringField()
    lockedAt = DateTimeField()
    lastError = StringField()
    errorHistory = ListField(DictField())
    metadata = DictField()
    createdAt = DateTimeField(default=utcnow)
    updatedAt = DateTimeField(default=utcnow)
    finishedAt = DateTimeField()
    expiresAt = DateTimeField()
