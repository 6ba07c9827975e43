"""Documents of JobFlow Similar; collection and field names follow the seed."""
from jobflow.models.alert import Alert, AlertState
from jobflow.models.audit import AuditEntry
from jobflow.models.capture import CaptureState, JobChange, JobMisfit
from jobflow.models.correction import CorrectionHeader
from jobflow.models.job import Embedding, Job, JobDeletion, SimilarJob
from jobflow.models.lease import Lease
from jobflow.models.login_limit import LoginAttempts, RequestCounts
from jobflow.models.metric_sample import MetricSample
from jobflow.models.queue_item import QueueItem
from jobflow.models.user import AdminUser
from jobflow.models.worker_status import WorkerStatus

ALL_DOCUMENTS = (Job, QueueItem, WorkerStatus, AdminUser, Lease, AuditEntry, MetricSample, Alert, AlertState, CorrectionHeader,
                 LoginAttempts, RequestCounts, JobDeletion, CaptureState, JobChange, JobMisfit)

# Indexes earlier versions created that no query uses any more. On the embedded database every index is
# read and rewritten by every write of its collection (a list or vector stored, an item claimed), so
# they are dropped where found. `embedding.status` is served by `embedding_status_model`; deletions reach
# the lists through `jobdeletions`, not a multikey index over every list; stuck and owned items are few
# and found through the state index.
OBSOLETE_INDEXES = {"jobs": ("createdAt_-1", "embedding.status_1", "similarJobs.jobId_1", "similarity_refill"),
                    "jobqueues": ("stuck", "owner", "task_status_newest")}


def ensure_indexes() -> list[str]:
    """Create every collection's indexes and drop the obsolete ones (idempotent); the names dropped."""
    for document in ALL_DOCUMENTS:
        document.ensure_indexes()
    dropped = []
    for document in (Job, QueueItem):
        collection = document._get_collection()
        present = set(collection.index_information())
        for name in OBSOLETE_INDEXES[collection.name]:
            if name in present:
                collection.drop_index(name)
                dropped.append(f"{collection.name}.{name}")
    return dropped


__all__ = ["Embedding", "Job", "JobDeletion", "SimilarJob", "OBSOLETE_INDEXES", "QueueItem", "WorkerStatus", "AdminUser",
           "Lease", "AuditEntry", "MetricSample", "Alert", "AlertState", "LoginAttempts", "RequestCounts",
           "CorrectionHeader", "ALL_DOCUMENTS",
           "CaptureState", "JobChange", "JobMisfit",
           "ensure_indexes"]
