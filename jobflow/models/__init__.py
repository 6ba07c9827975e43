"""Documents of JobFlow Similar; collection and field names follow the seed."""
from .job import Embedding, Job, SimilarJob
from .queue_item import QueueItem
from .worker_status import WorkerStatus
from .user import AdminUser
from .lease import Lease
from .audit import AuditEntry
from .metric import MetricSample
from .alert import Alert, AlertState

ALL_DOCUMENTS = (Job, QueueItem, WorkerStatus, AdminUser, Lease, AuditEntry, MetricSample, Alert, AlertState)


def ensure_indexes() -> None:
    """Create every collection's indexes (idempotent)."""
    for document in ALL_DOCUMENTS:
        document.ensure_indexes()


__all__ = ["Embedding", "Job", "SimilarJob", "QueueItem", "WorkerStatus", "AdminUser", "Lease", "AuditEntry",
           "MetricSample", "Alert", "AlertState", "ALL_DOCUMENTS", "ensure_indexes"]
