"""The embedding worker: claims queue items in batches, embeds, stores, keeps similar lists current.

One ``Worker`` per process. APScheduler runs its periodic jobs (``schedule.py``);
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
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import timedelta

import psutil
from pymongo import UpdateOne
from pymongo.errors import PyMongoError

from . import queue
from .embeddings import (BadInput, ConfigurationError, EmbeddingProvider, InvalidVector, ProviderError, RateLimited,
                         check_vector, get_provider, min_score)
from .embeddings.text import TEXTS_PER_JOB, combine, embedded_texts, job_text, text_hash
from .models import Job, Lease, WorkerStatus
from .models.fields import vector_to_bson
from .models.worker_status import live_query
from .timeutil import ms, utcnow

log = logging.getLogger("jobflow.worker")

CONFIG_ERROR_RETRY = timedelta(seconds=60)
DISABLED_REASON = "EMBEDDING_WORKER_ENABLED is false"
RECOMPUTE_STATE = "recompute-similarity:state"
JOB_FIELDS = {"title": 1, "company": 1, "category": 1, "location": 1, "description": 1, "status": 1,
              "embedding.status": 1, "embedding.textHash": 1, "embedding.model": 1}


def available_memory() -> int:
    """Bytes of memory this process may use: the cgroup limit when set, else the machine's total."""
    total = psutil.virtual_memory().total
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = open(path).read().strip()
        except OSError:
            continue
        if raw.isdigit() and 0 < int(raw) < total:
            return int(raw)
    return total


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
        self.memory_probe = memory_probe or self._memory_fraction
        self.stopping = threading.Event()
        self.state = "running"
        self.reason = ""
        self.blocked_until = 0.0       # monotonic time before which nothing is claimed
        self.processed = 0
        self.failed = 0
        self.tokens = 0
        self.current_batch: dict = {}
        self._busy = threading.Lock()  # held while a batch is in flight
        self._unsettled = False        # a batch or claim failed: settle held items at the next poll
        self._stats_lock = threading.Lock()
        self._last_stats = (time.monotonic(), 0)
        self.scheduler = None
        self.lists = None              # SimilarLists, set by start()
        self.debug = bool(settings.get("DEBUG_WORKER"))
        # EMBEDDING_WORKER_ENABLED=false: claim nothing, but keep the heartbeat, alert checks and samples.
        self.claiming = bool(settings.get("EMBEDDING_WORKER_ENABLED", True))
        if not self.claiming:
            self.state, self.reason = "stopped", DISABLED_REASON

    @classmethod
    def from_app(cls, app, **kwargs) -> "Worker":
        """A worker configured from a Flask app's settings."""
        return cls(dict(app.config), app=app, **kwargs)

    # ----- life cycle -------------------------------------------------------------------------
    def start(self, scheduler: bool = True) -> None:
        """Register, load the similarity index, and start the periodic jobs."""
        from .similarity.lists import SimilarLists
        if not self.claiming:
            self.heartbeat()
            log.info("%s: worker %s claims nothing; it still checks alerts and records metrics",
                     DISABLED_REASON, self.worker_id)
            if scheduler:
                from .schedule import start_scheduler
                self.scheduler = start_scheduler(self)
            return
        self.lists = SimilarLists(dimensions=self.provider.dimensions or None, top_n=self.settings["SIMILARITY_TOP_N"],
                                  min_score=min_score(self.settings), model=self.provider.model,
                                  block_size=self.settings["EMBEDDING_BATCH_SIZE"])
        self.lists.load()
        self.heartbeat()
        log.info("worker %s started: provider %s, %d jobs in the similarity index, %d calls at once",
                 self.worker_id, self.provider.describe(), len(self.lists), self.concurrency)
        if scheduler:
            from .schedule import start_scheduler
            self.scheduler = start_scheduler(self)

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming, let in-flight work finish within the grace period, give back the rest."""
        if timeout is None:
            timeout = self.settings["WORKER_GRACEFUL_SHUTDOWN_TIMEOUT"] / 1000.0
        self.stopping.set()
        self.state = "stopping"
        self._write_status()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        finished = self._busy.acquire(timeout=max(timeout, 0.01))
        released = queue.release_worker(self.worker_id, refund_attempt=True)
        # The schedule's leases it holds (alert checks, clean-up) go at once: another worker takes over at its next
        # run instead of a minute later. The recompute lease is released by the recompute itself when it ends.
        from .schedule import JOBS
        Lease._get_collection().delete_many({"owner": self.worker_id, "_id": {"$in": [j.id for j in JOBS if j.lease]}})
        if finished:
            self._busy.release()
        self.state = "stopped"
        self._write_status()
        log.info("worker %s stopped (%s; %d items given back)", self.worker_id,
                 "in-flight work finished" if finished else "grace period over", released)

    # ----- periodic jobs ----------------------------------------------------------------------
    def process_queue(self) -> int:
        """Claim and process batches until the queue is empty, the worker stops or must wait."""
        done = 0
        while self.claiming and not self.stopping.is_set():
            if time.monotonic() < self.blocked_until:
                break
            if not self._enabled() or not self._memory_ok():
                break
            with self._busy:
                if self.stopping.is_set():
                    break
                try:
                    if self._unsettled:
                        self._settle_after_error()
                    items = queue.claim(self.worker_id, self.claim_size)
                    if not items:
                        break
                    self.process_batch(items)
                except Exception:
                    # Most likely the database went away mid-batch: what this worker still holds is settled
                    # at the next poll that reaches it (not after QUEUE_STUCK_TIMEOUT), see _settle_after_error.
                    self._unsettled = True
                    raise
                done += len(items)
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
        log.info("WORKER STATS id=%s state=%s processed=%d failed=%d rate=%.0f/min tokens=%d memory=%.0fMB index=%d",
                 self.worker_id, self.state, self.processed, self.failed, rate, self.tokens,
                 psutil.Process().memory_info().rss / 2**20, len(self.lists) if self.lists else 0)

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
        from .admin.metrics import record_sample
        return record_sample(self.settings)

    def check_alerts(self):
        """Evaluate the alert rules and send the emails that are due (leased: one process at a time)."""
        if self.app is not None:
            from .alerts import check_alerts
            return check_alerts(self.app)
        return None

    def sync_index(self) -> None:
        """Bring the similarity index in step with changes made by other processes."""
        if self.lists is not None:
            self.lists.sync()

    def recompute_if_due(self) -> int:
        """Recompute every list when asked (admin action) or every SIMILARITY_RECOMPUTE_INTERVAL, one process at a time."""
        state = Lease._get_collection().find_one({"_id": RECOMPUTE_STATE}) or {}
        now = utcnow()
        last, asked = state.get("lastRunAt"), state.get("requestedAt")
        if last is None and asked is None:
            # Lists are kept current as jobs change; the first full pass is due one interval from now.
            Lease._get_collection().update_one({"_id": RECOMPUTE_STATE}, {"$setOnInsert": {"lastRunAt": now}},
                                               upsert=True)
            return 0
        due = (asked is not None and (last is None or asked > last)) or \
            (last is not None and now - last >= ms(self.settings["SIMILARITY_RECOMPUTE_INTERVAL"]))
        if not due or self.lists is None:
            return 0
        if not Lease.acquire("recompute-similarity", self.worker_id, timedelta(minutes=30)):
            return 0
        try:
            self.lists.sync()
            started = time.monotonic()
            count = self.lists.recompute_all()
            Lease._get_collection().update_one({"_id": RECOMPUTE_STATE}, {"$set": {
                "lastRunAt": utcnow(), "lastCount": count, "lastSeconds": round(time.monotonic() - started, 2)}},
                upsert=True)
            log.info("recomputed %d similar-jobs lists in %.1fs", count, time.monotonic() - started)
            return count
        finally:
            Lease.release("recompute-similarity", self.worker_id)

    # ----- one batch ----------------------------------------------------------------------------
    def process_batch(self, items: list[dict]) -> None:
        """Embed what needs it, store vectors, update lists, settle every item."""
        batch_id = uuid.uuid4().hex[:8]
        self.current_batch = {"id": batch_id, "size": len(items), "startedAt": utcnow()}
        started = time.monotonic()
        jobs = {j["_id"]: j for j in Job._get_collection().find({"_id": {"$in": [i["jobId"] for i in items]}},
                                                                 JOB_FIELDS)}
        to_embed: list[tuple[dict, dict, str, str]] = []   # (item, job, text, hash)
        current: list[dict] = []
        for item in items:
            job = jobs.get(item["jobId"])
            if job is None:
                queue.skip(item["_id"], self.worker_id, "job deleted", self.policy)
                continue
            if job.get("status") != "active":
                queue.skip(item["_id"], self.worker_id, f"job is {job.get('status')}", self.policy)
                continue
            text = job_text(job)
            digest = text_hash(text)
            emb = job.get("embedding") or {}
            if emb.get("status") == "completed" and emb.get("textHash") == digest \
                    and emb.get("model") == self.provider.model:
                current.append(item)      # unchanged text and model: never embedded again
                continue
            to_embed.append((item, job, [self.provider.prepare(t) for t in embedded_texts(job)], digest))
        if current:
            self._settle_current(current)
        if self.debug:
            log.debug("batch %s: %d items, %d to embed, %d already current", batch_id, len(items), len(to_embed),
                      len(current))
        if to_embed:
            self._embed_all(to_embed, batch_id)
        if self.debug:
            log.debug("batch %s done in %.2fs", batch_id, time.monotonic() - started)
        self.current_batch = {}

    def _settle_current(self, items: list[dict]) -> None:
        if self.lists is not None:
            self.lists.ensure_listed([i["jobId"] for i in items])
        queue.complete([i["_id"] for i in items], self.worker_id, self.policy)
        self._count(processed=len(items))

    def _embed_all(self, work: list[tuple[dict, dict, str, str]], batch_id: str) -> None:
        groups = self.provider.batches(["\n".join(w[2]) for w in work], inputs_each=TEXTS_PER_JOB)
        pending = [[work[i] for i in group] for group in groups]
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="embed") as pool:
            futures = {pool.submit(self._call, _flat(group)): group for group in pending}
            while futures:
                done, _ = wait(list(futures), return_when=FIRST_COMPLETED)
                for future in done:
                    group = futures.pop(future)
                    try:
                        self._store(group, future.result())
                    except _Held:
                        wait_s = max(self.blocked_until - time.monotonic(), 0.0)
                        queue.release([w[0]["_id"] for w in group], self.worker_id, delay=timedelta(seconds=wait_s))
                    except RateLimited as exc:
                        self._on_rate_limit(group, exc)
                    except ConfigurationError as exc:
                        self._on_config_error(group, exc)
                    except BadInput as exc:
                        if len(group) > 1:
                            # One text may be the cause: try each alone so the others go through.
                            for one in group:
                                futures[pool.submit(self._call, _flat([one]))] = [one]
                        else:
                            self._fail(group, str(exc), retryable=False)
                    except ProviderError as exc:
                        self._fail(group, str(exc), retryable=exc.retryable)
                    except PyMongoError:
                        # The database, not the item, failed: no attempt is failed (nor a retry delay served);
                        # the batch stops and process_queue gives back what is held once the database answers.
                        raise
                    except Exception as exc:  # one failing call never stops the loop
                        log.error("batch %s: unexpected error: %s", batch_id, exc)
                        self._fail(group, f"unexpected error: {type(exc).__name__}", retryable=True)

    def _call(self, texts: list[str]):
        """One provider call, unless a rate limit or a configuration error told this worker to wait."""
        if time.monotonic() < self.blocked_until:
            raise _Held()
        try:
            return self.provider.embed(texts)
        except RateLimited as exc:
            # Set in the calling thread, so the batch's next queued call already sees it.
            self.blocked_until = max(self.blocked_until, time.monotonic() + max(exc.retry_after, 0.5))
            raise
        except ConfigurationError:
            self.blocked_until = max(self.blocked_until, time.monotonic() + CONFIG_ERROR_RETRY.total_seconds())
            raise

    def _store(self, group, result) -> None:
        """Write each valid vector, then its lists, then complete its item (in that order)."""
        now = utcnow()
        good, bad = [], []
        for n, (item, job, text, digest) in enumerate(group):
            pair = slice(n * TEXTS_PER_JOB, (n + 1) * TEXTS_PER_JOB)
            try:
                parts = [check_vector(v, self.provider.dimensions) for v in result.vectors[pair]]
                good.append((item, job, digest, combine(parts), sum(result.tokens[pair])))
            except InvalidVector as exc:
                bad.append(((item, job, text, digest), str(exc)))
        if good:
            ops = [UpdateOne({"_id": job["_id"]}, {"$set": {
                "embedding.status": "completed", "embedding.vector": vector_to_bson(vector),
                "embedding.model": result.model, "embedding.dimensions": int(vector.shape[0]),
                "embedding.textHash": digest, "embedding.tokens": int(tokens), "embedding.generatedAt": now,
                "embedding.error": None, "embedding.retries": int(item.get("attempts", 1)) - 1}})
                for item, job, digest, vector, tokens in good]
            Job._get_collection().bulk_write(ops, ordered=False)
            if self.lists is not None:
                self.lists.on_embedded([job["_id"] for _, job, _, _, _ in good],
                                       [vector for _, _, _, vector, _ in good],
                                       [digest for _, _, digest, _, _ in good])
            queue.complete([item["_id"] for item, *_ in good], self.worker_id, self.policy)
            self._count(processed=len(good), tokens=sum(t for *_, t in good))
        for entry, error in bad:
            self._fail([entry], f"invalid vector: {error}", retryable=True)

    def _on_rate_limit(self, group, exc: RateLimited) -> None:
        delay = max(exc.retry_after, 0.5)   # _call has already stopped further calls for this long
        # Recorded for the "provider unhealthy" alert: rate limits spend no attempt and leave no queue error.
        WorkerStatus._get_collection().update_one({"workerId": self.worker_id},
                                                  {"$push": {"rateLimitedAt": {"$each": [utcnow()], "$slice": -20}}})
        queue.release([w[0]["_id"] for w in group], self.worker_id, delay=timedelta(seconds=delay))
        log.warning("rate limited: %d items wait %.1fs (no attempt spent)", len(group), delay)

    def _on_config_error(self, group, exc: ConfigurationError) -> None:
        queue.release([w[0]["_id"] for w in group], self.worker_id)
        if self.state != "degraded" or self.reason != str(exc):
            log.error("stopped claiming: %s; trying again in %ds", exc, CONFIG_ERROR_RETRY.total_seconds())
        self.state, self.reason = "degraded", str(exc)
        self._write_status()

    def _fail(self, group, error: str, retryable: bool) -> None:
        failed = []
        for item, job, _, _ in group:
            if queue.fail(item, self.worker_id, error, self.policy, retryable=retryable) == "failed":
                failed.append(UpdateOne({"_id": job["_id"]}, {"$set": {
                    # retries = attempts made, so the runbook's query (embedding.retries >= QUEUE_MAX_ATTEMPTS)
                    # finds the jobs that used up their attempts.
                    "embedding.status": "failed", "embedding.error": error[:500],
                    "embedding.retries": int(item.get("attempts", 1))}}))
        if failed:
            Job._get_collection().bulk_write(failed, ordered=False)
        self._count(failed=len(group))
        log.warning("%d items failed an attempt: %s", len(group), error)

    # ----- state ------------------------------------------------------------------------------
    def _count(self, processed: int = 0, failed: int = 0, tokens: int = 0) -> None:
        with self._stats_lock:
            self.processed += processed
            self.failed += failed
            self.tokens += tokens
        if processed and self.state == "degraded" and time.monotonic() >= self.blocked_until:
            self.state, self.reason = "running", ""

    def _enabled(self) -> bool:
        """False while a rollback (level 1 or more) is in force: claim nothing."""
        from . import rollback
        if rollback.level():
            if self.state != "stopped":
                log.warning("rollback in force: this worker claims nothing until it is lifted")
                self.state, self.reason = "stopped", "disabled by rollback"
                self._write_status()
            return False
        if self.reason == "disabled by rollback" and self.claiming:
            log.info("rollback lifted: claiming again")
            self.state, self.reason = "running", ""
            self._write_status()
        return True

    def _memory_fraction(self) -> float:
        return psutil.Process().memory_info().rss / available_memory()

    def _memory_ok(self) -> bool:
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
                     "model": self.provider.model, "currentBatch": self.current_batch,
                     "processed": self.processed, "failed": self.failed, "tokensUsed": self.tokens,
                     "memory": {"rss": rss, "fraction": round(rss / available_memory(), 4)},
                     "indexSize": len(self.lists) if self.lists else 0,
                     # Switched off on purpose (setting or rollback): alive, but nothing will be embedded.
                     "disabled": not self.claiming or self.reason == "disabled by rollback"},
            "$setOnInsert": {"startedAt": utcnow()}}, upsert=True)


class _Held(Exception):
    """A provider call not made: the provider told this worker to wait (rate limit, configuration error)."""


def _flat(group) -> list[str]:
    """The texts of a group of work entries, in order (each job contributes TEXTS_PER_JOB)."""
    return [text for entry in group for text in entry[2]]


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
    done.wait()
    worker.stop()
    return 0


def request_recompute() -> None:
    """Ask the workers to recompute every similar-jobs list at their next check (within a minute)."""
    Lease._get_collection().update_one({"_id": RECOMPUTE_STATE}, {"$set": {"requestedAt": utcnow()}}, upsert=True)
