"""Documents of JobFlow Similar; collection and field names follow the seed."""
from .alert import Alert, AlertState
from .audit import AuditEntry
from .correction import CorrectionHeader
from .job import Embedding, Job, SimilarJob
from .lease import Lease
from .login_limit import LoginAttempts
from .metric import MetricSample
from .queue_item import QueueItem
from .user import AdminUser
from .worker_status import WorkerStatus

ALL_DOCUMENTS = (Job, QueueItem, WorkerStatus, AdminUser, Lease, AuditEntry, MetricSample, Alert, AlertState, CorrectionHeader,
                 LoginAttempts)


def ensure_indexes() -> None:
    """Create every collection's indexes (idempotent)."""
    for document in ALL_DOCUMENTS:
        document.ensure_indexes()


__all__ = ["Embedding", "Job", "SimilarJob", "QueueItem", "WorkerStatus", "AdminUser", "Lease", "AuditEntry",
           "MetricSample", "Alert", "AlertState", "LoginAttempts", "CorrectionHeader", "ALL_DOCUMENTS", "ensure_indexes"]
