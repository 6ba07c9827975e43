"""The worker's periodic jobs, as a table with stable ids (one scheduler per worker process).

Every process that runs a worker (``flask --app app worker``, or the thread of
``python app.py``) runs this table. With EMBEDDING_WORKER_ENABLED=false only
the rows that do not touch the queue run (``claims=False``): the heartbeat,
the alert checks and the per-minute sample, so alerts and charts keep working
while embedding is switched off.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from pymongo.errors import PyMongoError

from jobflow.db import keep_embedded_running
from jobflow.logs import brief
from jobflow.models import Lease
from jobflow.timeutil import utcnow
from jobflow.worker.threads import DaemonJobExecutor, Halted

log = logging.getLogger("jobflow.worker")


@dataclass(frozen=True)
class PeriodicJob:
    """One row of the table: what runs, how often (ms), and whether one process at a time (lease)."""
    id: str
    run: Callable[[object], object]
    every_ms: Callable[[dict], int]
    lease: bool = False
    first_run_now: bool = True
    claims: bool = True            # works on the queue or the similarity index: skipped when claiming is off


def _stuck_every(s: dict) -> int:
    return max(5000, min(60000, s["QUEUE_STUCK_TIMEOUT"] // 4))


def _sync_every(s: dict) -> int:
    # At least a second apart: each sync scans the jobs and re-reads the last SYNC_MARGIN (5 s) of changes.
    return max(1000, min(s["EMBEDDING_WORKER_INTERVAL"], 5000))


# The sample of a minute is written by the first process to try after the minute ends, so trying every
# SAMPLE_EVERY_MS puts it in the database within that long of the minute's end (a failed insert costs nothing).
SAMPLE_EVERY_MS = 10_000
ROLLBACK_EVERY_MS = 1_000

JOBS: list[PeriodicJob] = [
    PeriodicJob("process-queue", lambda w: w.process_queue(), lambda s: s["EMBEDDING_WORKER_INTERVAL"]),
    # Every second, whatever the other jobs are doing: a rollback reaches a batch, a refit or a hung provider call.
    PeriodicJob("obey-rollback", lambda w: w.watch_rollback(), lambda s: ROLLBACK_EVERY_MS),
    PeriodicJob("heartbeat", lambda w: w.heartbeat(), lambda s: s["WORKER_HEARTBEAT_INTERVAL"], first_run_now=False,
                claims=False),
    PeriodicJob("sync-index", lambda w: w.sync_index(), _sync_every, first_run_now=False),
    PeriodicJob("recover-stuck", lambda w: w.recover_stuck(), _stuck_every),
    PeriodicJob("cleanup-queue", lambda w: w.cleanup(), lambda s: 3_600_000, lease=True),
    PeriodicJob("recompute-similarity", lambda w: w.recompute_if_due(), lambda s: 60_000, first_run_now=False),
    PeriodicJob("check-alerts", lambda w: w.check_alerts(), lambda s: s["ALERT_CHECK_INTERVAL"], lease=True,
                claims=False),
    PeriodicJob("record-metrics", lambda w: w.record_metrics(), lambda s: SAMPLE_EVERY_MS, claims=False),
    # Jobs written by other applications into the queue (one process at a time holds the capture's own lease).
    PeriodicJob("capture-changes", lambda w: w.capture_changes(), lambda s: 1000, claims=False),
    # With the embedded database (MONGODB_URI unset): if it is gone, start it again on its port.
    PeriodicJob("embedded-database", lambda w: keep_embedded_running(), lambda s: 5_000, first_run_now=False,
                claims=False),
]


def _guarded(job: PeriodicJob, worker) -> Callable[[], None]:
    """Run the job; with a lease, only when this worker holds it; never let an error kill the scheduler."""
    def run():
        if worker.stopping.is_set():
            return
        try:
            if job.lease:
                ttl = timedelta(milliseconds=max(job.every_ms(worker.settings), 60_000))
                if not Lease.acquire(job.id, worker.worker_id, ttl):
                    return
            job.run(worker)
        except Halted:
            pass        # given up on purpose (grace period over, rollback): whoever halted it settles
        except Exception as exc:
            log.error("periodic job %s failed: %s", job.id, brief(exc))
            if isinstance(exc, PyMongoError) and hasattr(worker, "note_database_error"):
                worker.note_database_error()
    return run


def start_scheduler(worker, jobs: list[PeriodicJob] | None = None) -> BackgroundScheduler:
    """Start a BackgroundScheduler running the table for ``worker``.

    Each run has a daemon thread of its own (``threads.py``): a stopping process does not wait at exit for a job
    still running (a refit, a hung call); ``Worker.stop`` has settled what it held by then.
    """
    scheduler = BackgroundScheduler(executors={"default": DaemonJobExecutor()},
                                    job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
                                    timezone="UTC")
    for job in jobs or JOBS:
        if job.claims and not worker.claiming:
            continue
        seconds = job.every_ms(worker.settings) / 1000.0
        first = utcnow() if job.first_run_now else utcnow() + timedelta(seconds=seconds)
        scheduler.add_job(_guarded(job, worker), "interval", seconds=seconds, id=job.id, name=job.id,
                          next_run_time=first)
    scheduler.start()
    return scheduler
