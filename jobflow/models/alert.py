"""Alerts: one document per time a rule fired, open until it stops firing (collection ``alerts``).

Only ``jobflow.alerts.check_alerts`` writes them, one process at a time (it runs
under a lease). ``history`` tells the alert's life: opened and resolved (with
the figures then), emailed (the opened or resolved email went out), reminder
(a reminder email went out), and notify_failed when an email could not be sent
(it stays due and the next check retries it; repeats count on the same entry).
"""
from mongoengine import DateTimeField, DictField, Document, IntField, ListField, StringField

from jobflow.timeutil import utcnow

ALERT_STATUSES = ("open", "resolved")
ALERT_SEVERITIES = ("warning", "critical")
ALERT_EVENTS = ("opened", "emailed", "reminder", "resolved", "notify_failed")
EMAIL_KINDS = ("opened", "reminder", "resolved")
HISTORY_KEEP = 200


class Alert(Document):
    """One occurrence of an alert rule firing: what, since when, the latest figures, who was told."""
    meta = {
        "collection": "alerts",
        "indexes": [
            {"fields": ["status", "key"], "name": "status_key"},
            # At most one open alert per rule, whatever runs the check.
            {"fields": ["key"], "name": "one_open_per_key", "unique": True,
             "partialFilterExpression": {"status": "open"}},
            {"fields": ["-openedAt"], "name": "newest"},
        ],
    }

    key = StringField(required=True)              # the rule: failures, queue, workers, provider, coverage
    status = StringField(required=True, default="open", choices=ALERT_STATUSES)
    severity = StringField(default="warning", choices=ALERT_SEVERITIES)
    title = StringField(required=True)
    summary = StringField()                       # one line with the latest figures
    page = StringField()                          # dashboard path that shows the figures
    figures = DictField()                         # latest figures, label -> value
    openedAt = DateTimeField(required=True, default=utcnow)
    checkedAt = DateTimeField()                   # last check that saw it (open) or resolved it
    resolvedAt = DateTimeField()
    lastNotifiedAt = DateTimeField()              # last email that went out for it
    notifications = IntField(default=0)           # emails that went out for it
    owed = StringField(choices=("opened", "resolved"))  # email due and not yet sent
    history = ListField(DictField())              # [{at, event, figures, email?} | {at, event: notify_failed, email,
    #                                                  error, attempts, lastAt}], oldest first, the last HISTORY_KEEP


class AlertState(Document):
    """Figures the rules compare against from one check to the next (collection ``alertstate``).

    ``_id`` ``coverage`` keeps the coverage of each check within the last hour:
    samples [{at, coverage}].
    """
    meta = {"collection": "alertstate"}

    name = StringField(primary_key=True)
    samples = ListField(DictField())
    updatedAt = DateTimeField()
