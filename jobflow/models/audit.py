"""Who did what to the pipeline, and when (collection ``auditlog``)."""
from mongoengine import DateTimeField, DictField, Document, IntField, StringField

from jobflow.timeutil import utcnow


class AuditEntry(Document):
    """One admin action: actor, action, target, how many items it touched."""
    meta = {"collection": "auditlog", "indexes": [{"fields": ["-at"], "name": "newest"}]}

    at = DateTimeField(required=True, default=utcnow)
    actor = StringField(required=True)      # an admin's email, or "api-token"
    via = StringField(required=True)        # "page", "api" or "cli"
    action = StringField(required=True)     # e.g. "retry-failed", "release-worker"
    target = StringField()                  # what it acted on: an item, a worker, a filter
    count = IntField(default=0)             # how many items it touched
    detail = DictField()
    ip = StringField()
