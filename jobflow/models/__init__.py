"""Documents of JobFlow Similar; collection and field names follow the seed."""
from .job import Embedding, Job, SimilarJob
from .queue_item import QueueItem
from .worker_status import WorkerStatus
from .user import AdminUser
from .lease import Lease

ALL_DOCUMENTS = (Job, QueueItem, WorkerStatus, AdminUser, Lease)


def ensure_indexes() -> None:
    """Create every collection's indexes (idempotent)."""
    for document in ALL_DOCUMENTS:
        document.ensure_indexes()


__all__ = ["Embedding", "Job", "SimilarJob", "QueueItem", "WorkerStatus", "AdminUser", "Lease",
           "ALL_DOCUMENTS", "ensure_indexes"]
