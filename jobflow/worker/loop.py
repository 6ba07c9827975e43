"""The embedding worker: claims queue items in batches, embeds, stores, keeps similar lists current.

One ``Worker`` per process. APScheduler runs its periodic jobs (``schedule.py``);
``batch.py`` handles each claimed batch, ``refit.py`` the full recompute and the
language refit; a stop past its grace period or a rollback gives up the work in
hand (``threads.py``);
``flask --app app worker`` runs it as its own process, ``python app.py`` as a
thread beside the web app. Any number of workers on any number of hosts may
share one queue: claims are atomic and every write checks ownership.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

import psutil

from jobflow.capture.follow import Capture
from jobflow.db import commands
from jobflow.embeddings import EmbeddingProvider, get_provider, language, min_score
from jobflow.jobs import queue
from jobflow.models import Lease, WorkerStatus
from jobflow.models.worker_status import live_query
from jobflow.ops import recompute
from jobflow.timeutil import ms, utcnow
from jobflow.worker import pacing
from jobflow.worker.batch import BatchProcessor, Counters
from jobflow.worker.memory import available_memory, memory_fraction, trim_memory
from jobflow.worker.threads import Halted

log = logging.getLogger("jobflow.worker")

DISABLED_REASON = "EMBEDDING_WORKER_ENABLED is false"
ROLLBACK_REASON = "disabled by rollback"
HALT_WAIT_SECONDS = 3.0     # a halted batch lets go within a poll (0.2 s), or a database write, of being told


class Worker:
    """Processes the embedding queue; see the module docstring."""

    def __init__(self, settings: dict, provider: EmbeddingProvider | None = None, worker_id: str | None = None,
                 memory_probe=None, app=None):
        self.settings = settings
        self.app = app                 # for work that needs an app context (alert emails)
        self.provider = provider or get_provider(settings)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.policy = queue.QueuePolicy.from_settings(settings)
        self.concurrency = self.provider.max_concurrent or settings["EMBEDDING_MAX_CONCURRENT"]
        self.claim_size = self.provider.max_batch_inputs * self.concurrency
        # A drain's lists are written once per flush: a list a drain changes five times is written once.
        self.flush_seconds = settings["SIMILARITY_FLUSH_INTERVAL"] / 1000
        pacing.configure(settings["WORKER_YIELD_LATENCY"])
        self.memory_probe = memory_probe or memory_fraction
        self.stopping = threading.Event()
        self.halt = threading.Event()  # give up the work in hand now: grace period over, or a rollback in force
        self._switch = threading.Lock()  # one rollback transition at a time (the watch and the queue's poll)
        self.state = "running"
        self.reason = ""
        self.counters = Counters()
        self._busy = threading.Lock()  # held while a batch is in flight
        self._unsettled = False        # a batch or claim failed: settle held items at the next poll
        self._stats_lock = threading.Lock()
        self._last_stats = (time.monotonic(), 0)
        self.scheduler = None
        self.lists = None              # SimilarLists, set by start()
        self.idle = True               # the last claim found nothing: no drain under way
        self.capture = Capture(settings, self.worker_id, self.stopping)
        self.batch = BatchProcessor(self.worker_id, self.provider, self.policy, self.counters, self.concurrency,
                                    debug=bool(settings.get("DEBUG_WORKER")), halt=self.halt)
        # EMBEDDING_WORKER_ENABLED=false: claim nothing, but keep the heartbeat, alert checks and samples.
        self.claiming = bool(settings.get("EMBEDDING_WORKER_ENABLED", True))
        if not self.claiming:
            self.state, self.reason = "stopped", DISABLED_REASON

    @classmethod
    def from_app(cls, app, **kwargs) -> "Worker":
        """A worker configured from a Flask app's settings."""
        return cls(dict(app.config), app=app, **kwargs)

    # ----- what the batch keeps -------------------------------------------------------------
    processed = property(lambda self: self.counters.processed, doc="Items processed since start.")
    failed = property(lambda self: self.counters.failed, doc="Attempts failed since start.")
    tokens = property(lambda self: self.counters.tokens, doc="Tokens used since start.")
    unflushed = property(lambda self: self.batch.unflushed, doc="Items waiting for their lists' flush.")

    @property
    def blocked_until(self) -> float:
        """Monotonic time before which nothing is claimed (the provider asked this worker to wait)."""
        return self.batch.blocked_until

    @blocked_until.setter
    def blocked_until(self, value: float) -> None:
        self.batch.blocked_until = value

    def process_batch(self, items: list[dict]) -> None:
        """Embed, store and settle one claimed batch; follow the provider's health in this worker's state."""
        self.batch.run(items)
        if self.halt.is_set():
            return                  # a rollback came meanwhile: its state stands
        if self.batch.trouble and (self.state, self.reason) != ("degraded", self.batch.trouble):
            self.state, self.reason = "degraded", self.batch.trouble
            self._write_status()
        elif not self.batch.trouble and self.state == "degraded":
            self.state, self.reason = "running", ""

    def flush_lists(self) -> int:
        """Write the lists changed since the last flush, then complete the items whose lists they are."""
        return self.batch.flush_lists()

    # ----- life cycle -------------------------------------------------------------------------
    def start(self, scheduler: bool = True) -> None:
        """Register, load the similarity index, and start the periodic jobs."""
        from jobflow.similarity.lists import SimilarLists
        if not self.claiming:
            self.heartbeat()
            log.info("%s: worker %s claims nothing; it still checks alerts and records metrics",
                     DISABLED_REASON, self.worker_id)
            if scheduler:
                from jobflow.worker.schedule import start_scheduler
                self.scheduler = start_scheduler(self)
            return
        def loaded() -> SimilarLists:
            lists = SimilarLists(dimensions=self.provider.dimensions or None, top_n=self.settings["SIMILARITY_TOP_N"],
                                 min_score=min_score(self.settings), raw_min_score=min_score(self.settings, raw=True),
                                 model=self.provider.model, block_size=self.settings["EMBEDDING_BATCH_SIZE"],
                                 language_balance=self.settings.get("SIMILARITY_LANGUAGE_BALANCE", True))
            lists.load()
            return lists
        self.lists = commands.retried(loaded, "loading the similarity index", 120.0)   # a database restarting
        self.batch.lists = self.lists
        trim_memory()
        if self.lists.stored_lists_stale():
            # Lists were written under another correction (the setting changed, or a new fit was adopted while no
            # worker ran): every list again, by the first worker to check.
            recompute.request()
        self.heartbeat()
        log.info("worker %s started: provider %s, %d jobs in the similarity index, %d calls at once",
                 self.worker_id, self.provider.describe(), len(self.lists), self.concurrency)
        if scheduler:
            from jobflow.worker.schedule import start_scheduler
            self.scheduler = start_scheduler(self)

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming, let in-flight work finish within the grace period, give back the rest.

        At the grace period's end the batch in hand is given up: its provider calls are abandoned (they run in
        daemon threads, so the process exits without waiting for them) and its items go back with the attempt
        refunded. Nothing of this worker is settled or logged as done after its "stopped" line.
        """
        if timeout is None:
            timeout = self.settings["WORKER_GRACEFUL_SHUTDOWN_TIMEOUT"] / 1000.0
        deadline = time.monotonic() + timeout
        self.stopping.set()
        self.state = "stopping"
        self._write_status()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        self.capture.stop()
        finished = self._busy.acquire(timeout=max(deadline - time.monotonic(), 0.01))
        held = finished or self._halt_batch()
        if finished:
            self._flush_before(deadline)    # finished items are completed, not given back to be embedded again
        released = queue.release_worker(self.worker_id, refund_attempt=True)
        # The schedule's leases it holds (alert checks, clean-up) go at once: another worker takes over at its next
        # run instead of a minute later. The recompute lease is released by the recompute itself when it ends.
        from jobflow.worker.schedule import JOBS
        Lease._get_collection().delete_many({"owner": self.worker_id, "_id": {"$in": [j.id for j in JOBS if j.lease]}})
        if held:
            self._busy.release()
        self.state = "stopped"
        self._write_status()
        log.info("worker %s stopped (%s; %d items given back)", self.worker_id,
                 "in-flight work finished" if finished else "grace period over", released)

    def _halt_batch(self) -> bool:
        """Give up the batch in hand (its provider calls are abandoned); whether it let go of ``_busy`` in time."""
        self.halt.set()
        return self._busy.acquire(timeout=HALT_WAIT_SECONDS)

    def _flush_before(self, deadline: float) -> None:
        """The last flush of a stopping worker, unless a refit holds the lists past the deadline (items go back)."""
        if self.lists is not None and not self.lists.lock.acquire(timeout=max(deadline - time.monotonic(), 0.01)):
            return
        try:
            self.flush_lists()
        except Exception as exc:
            log.warning("could not write the last similar-jobs lists before stopping: %s", exc)
        finally:
            if self.lists is not None:
                self.lists.lock.release()

    # ----- periodic jobs ----------------------------------------------------------------------
    def process_queue(self) -> int:
        """Claim and process batches until the queue is empty, the worker stops or must wait."""
        done = 0
        while self.claiming and not self.stopping.is_set():
            if time.monotonic() < self.blocked_until:
                break
            if not self._obey_rollback() or not self._obey_memory_guard():
                break
            with self._busy:
                if self.stopping.is_set():
                    break
                try:
                    if self._unsettled:
                        self._settle_after_error()
                    items = queue.claim(self.worker_id, self.claim_size)
                    self.idle = not items
                    if not items:
                        break
                    self.process_batch(items)
                    if time.monotonic() - self.batch.last_flush >= self.flush_seconds and not self.halt.is_set():
                        self.flush_lists()
                except Halted:
                    break       # given up (grace period over, rollback): what it holds is given back by the halter
                except Exception:
                    # Most likely the database went away mid-batch: what this worker still holds is settled
                    # at the next poll that reaches it (not after QUEUE_STUCK_TIMEOUT), see _settle_after_error.
                    self._unsettled = True
                    raise
                done += len(items)
        drained = done and self.idle
        if self.giving_up():
            return done
        if drained and language.release():    # before the refit: its peak need not hold the model too
            log.debug("drain ended: language detector released")
        if (self.unflushed or (self.lists is not None and self.lists.dirty)) and not self.giving_up():
            with self._busy:                        # the queue is empty, or the worker must wait
                self.flush_lists()
        if done and self.lists is not None and self.lists.refit_due() and not self.giving_up():
            # A drain just ended: fit the language correction now rather than at the next minute's check, so
            # an import's lists are balanced seconds after it is embedded (same lease, same rule). After the
            # last flush: the drain's items are complete once their lists are written, not after a fit and a
            # rewrite of every list (a fit that is adopted writes the last flush's lists a second time).
            self.recompute_if_due()
        if drained:
            trim_memory()
        return done

    def note_database_error(self) -> None:
        """A periodic job saw the database fail: writes it acknowledged may be lost; settle at the next poll."""
        self._unsettled = True

    def _settle_after_error(self) -> None:
        """After a batch or claim ended in an error: give back what this worker still holds, re-write lists.

        Called with ``_busy`` held, so nothing of this worker is in flight: every item it still holds is
        left over (its write failed, or a database restart lost the last writes it acknowledged). The
        attempt stays spent. Lists whose write was lost are written again from the index.
        """
        released = queue.release_worker(self.worker_id)
        self.batch.unflushed = []       # given back above: embedded again, or found current and listed
        repaired = self.lists.repair() if self.lists is not None else 0
        self._unsettled = False
        log.warning("recovered from an error: %d held items back to pending, %d similar-jobs lists re-written",
                    released, repaired)

    def heartbeat(self) -> None:
        """Refresh this worker's status document and log the one-line stats."""
        self._write_status()
        now = time.monotonic()
        with self._stats_lock:
            then, count = self._last_stats
            self._last_stats = (now, self.processed)
        rate = (self.processed - count) / max(now - then, 1e-9) * 60
        log.info("WORKER STATS id=%s state=%s processed=%d failed=%d rate=%.0f/min tokens=%d memory=%.0fMB index=%d "
                 "yielded=%.1fs", self.worker_id, self.state, self.processed, self.failed, rate, self.tokens,
                 psutil.Process().memory_info().rss / 2**20, len(self.lists) if self.lists else 0, pacing.state.waited)

    def recover_stuck(self) -> int:
        """Return items of dead workers to the queue (a worker is dead past WORKER_DEAD_THRESHOLD)."""
        dead_since = utcnow() - ms(self.settings["WORKER_DEAD_THRESHOLD"])
        live = WorkerStatus._get_collection().distinct("workerId", live_query(dead_since))
        return queue.recover_stuck(ms(self.settings["QUEUE_STUCK_TIMEOUT"]), [self.worker_id, *live])

    def cleanup(self) -> int:
        """Delete finished queue items past QUEUE_CLEANUP_DAYS (the TTL index does it too)."""
        return queue.clear_old(self.settings["QUEUE_CLEANUP_DAYS"])

    def record_metrics(self):
        """Write this minute's sample for the dashboard's charts (the first worker each minute does it)."""
        from jobflow.ops.samples import record_sample
        return record_sample(self.settings)

    def check_alerts(self):
        """Evaluate the alert rules and send the emails that are due (leased: one process at a time)."""
        if self.app is not None:
            from jobflow.alerts import check_alerts
            return check_alerts(self.app)
        return None

    def capture_changes(self) -> None:
        """Turn other applications' writes to the jobs into queue work (the process holding the lease)."""
        self.capture.run()

    def sync_index(self) -> None:
        """Bring the similarity index in step with changes made by other processes."""
        if self.lists is not None:
            self.lists.sync()

    def recompute_if_due(self) -> int:
        """Recompute every list when asked or every SIMILARITY_RECOMPUTE_INTERVAL (one process at a time)."""
        from jobflow.worker.refit import recompute_if_due
        return recompute_if_due(self)

    def giving_up(self) -> bool:
        """Whether the worker stops, or a rollback gave up its work: nothing new is started, nothing written."""
        return self.stopping.is_set() or self.halt.is_set()

    # ----- state ------------------------------------------------------------------------------
    def watch_rollback(self) -> None:
        """Every second (its own periodic job): a rollback in force reaches this worker whatever it is doing."""
        from jobflow.jobs import rollback
        if rollback.level(fresh=True) and not self.stopping.is_set():
            self._obey_rollback()

    def _obey_rollback(self) -> bool:
        """May this worker claim? False while a rollback is in force; records the change of state in its status.

        When a rollback comes into force the work in hand is given up at once (a batch, its provider calls, a
        refit), and the items held go back to pending with the attempt refunded, as at a stop.
        """
        from jobflow.jobs import rollback
        level = rollback.level()
        with self._switch:
            if level and self.reason != ROLLBACK_REASON:
                held = self._halt_batch()
                try:
                    released = queue.release_worker(self.worker_id, refund_attempt=True)
                    if held:
                        self.batch.unflushed = []       # given back above; their lists are written when lifted
                finally:
                    if held:
                        self._busy.release()
                log.warning("rollback level %d in force: this worker claims nothing until it is lifted "
                            "(%d held items given back)", level, released)
                self.state, self.reason = "stopped", ROLLBACK_REASON
                self._write_status()
            elif not level and self.reason == ROLLBACK_REASON and self.claiming:
                log.info("rollback lifted: claiming again")
                self.halt.clear()
                self.state, self.reason = "running", ""
                self._write_status()
        return not level

    def _obey_memory_guard(self) -> bool:
        """May this worker claim? False above WORKER_MEMORY_THRESHOLD (state paused); records changes in its status."""
        if not self.settings["WORKER_PAUSE_ON_HIGH_MEMORY"]:
            return True
        fraction = self.memory_probe()
        threshold = self.settings["WORKER_MEMORY_THRESHOLD"]
        if fraction >= threshold:
            if self.state != "paused":
                log.warning("memory at %.0f%% of the limit (threshold %.0f%%): paused claiming",
                            fraction * 100, threshold * 100)
                self.state, self.reason = "paused", f"memory at {fraction:.0%} of the limit"
                self._write_status()
            return False
        if self.state == "paused":
            log.info("memory back to %.0f%%: resumed", fraction * 100)
            self.state, self.reason = "running", ""
            self._write_status()
        return True

    def _write_status(self) -> None:
        rss = psutil.Process().memory_info().rss
        WorkerStatus._get_collection().update_one({"workerId": self.worker_id}, {
            "$set": {"host": socket.gethostname(), "pid": os.getpid(), "lastHeartbeat": utcnow(),
                     "state": self.state, "reason": self.reason, "provider": self.provider.name,
                     "model": self.provider.model, "currentBatch": self.batch.current,
                     "processed": self.processed, "failed": self.failed, "tokensUsed": self.tokens,
                     "memory": {"rss": rss, "fraction": round(rss / available_memory(), 4)},
                     "indexSize": len(self.lists) if self.lists else 0,
                     # Switched off on purpose (setting or rollback): alive, but nothing will be embedded.
                     "disabled": not self.claiming or self.reason == ROLLBACK_REASON},
            "$setOnInsert": {"startedAt": utcnow()}}, upsert=True)


def run_worker_process(app) -> int:
    """Run a worker until SIGTERM/SIGINT (``flask --app app worker``)."""
    import signal
    worker = Worker.from_app(app)
    done = threading.Event()

    def on_signal(signum, frame):
        log.info("received %s: stopping", signal.Signals(signum).name)
        done.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.start()
    # Woken twice a second: a signal the kernel hands to another thread runs its handler only once this thread
    # runs Python again, and a wait without a timeout never would (SIGTERM went unanswered for 60 s).
    while not done.wait(0.5):
        pass
    worker.stop()
    return 0
