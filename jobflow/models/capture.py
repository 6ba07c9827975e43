"""Change capture: its state (collection ``jobflowcapture``), the jobs it noticed changing (``jobchanges``) and
the documents it could not use (``jobmisfits``)."""
from mongoengine import DateTimeField, DictField, Document, IntField, ListField, ObjectIdField, StringField

from jobflow.models.job import JobNote


class CaptureState(Document):
    """One document (``_id`` "jobs"): where the change stream stands and how the capture goes.

    ``token`` is the resume token stored after each handled batch; ``lags`` the recent write-to-queue lags
    (ms, newest last) that the per-minute sample reads.
    """
    meta = {"collection": "jobflowcapture", "strict": False}

    id = StringField(primary_key=True)
    mode = StringField()               # stream, poll or off
    reason = StringField()             # why this mode
    owner = StringField()              # the worker capturing now
    token = DictField()
    pollMark = DateTimeField()         # poll mode: the newest updatedAt seen
    heartbeatAt = DateTimeField()      # the capturing worker's last pass
    lastEventAt = DateTimeField()      # the write time of the newest event handled
    lastLagMs = IntField()
    lags = ListField(DictField())
    events = IntField(default=0)
    enqueued = IntField(default=0)
    removed = IntField(default=0)
    sweep = DictField()                # the last sweep: state, why, scanned, total, enqueued, removed, times


class JobChange(JobNote):
    """A job another application closed, reopened or changed, noticed by capture; kept a day for every worker's
    index sync (a job deleted is a ``JobDeletion``)."""
    meta = {"collection": "jobchanges"}


class JobMisfit(Document):
    """A job document the product cannot use (why, and since when): never embedded, listed on the dashboard."""
    meta = {"collection": "jobmisfits", "indexes": [{"fields": ["-at"], "name": "newest"}]}

    id = ObjectIdField(primary_key=True)
    reason = StringField(required=True)
    at = DateTimeField(required=True)
