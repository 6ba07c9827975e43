"""What each worker process last said about itself (collection ``workerstatuses``)."""
from mongoengine import DateTimeField, DictField, Document, IntField, StringField

from jobflow.timeutil import utcnow

WORKER_STATES = ("running", "paused", "stopping", "stopped", "degraded")


def live_query(dead_since) -> dict:
    """Workers alive: heard from since ``dead_since`` (now minus WORKER_DEAD_THRESHOLD) and not stopped."""
    return {"lastHeartbeat": {"$gte": dead_since}, "state": {"$ne": "stopped"}}


class WorkerStatus(Document):
    """One worker process: identity, state and counters, refreshed by its heartbeat."""
    meta = {
        "collection": "workerstatuses",
        "strict": False,
        "indexes": [{"fields": ["workerId"], "unique": True}, "-lastHeartbeat"],
    }

    workerId = StringField(required=True)
    host = StringField()
    pid = IntField()
    startedAt = DateTimeField(default=utcnow)
    lastHeartbeat = DateTimeField(default=utcnow)
    state = StringField(default="running", choices=WORKER_STATES)
    reason = StringField()
    provider = StringField()
    model = StringField()
    currentBatch = DictField()
    processed = IntField(default=0)
    failed = IntField(default=0)
    tokensUsed = IntField(default=0)
    memory = DictField()
    indexSize = IntField(default=0)
