"""Embedding a batch of claimed queue items: the provider calls, the checks, the writes, the settling.

Order of writes per job: vector, then lists, then the queue item, so a crash
at any point leaves work to redo, never a lie. Lists and completions are
coalesced: written together at the next flush, not batch by batch.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, wait
from contextlib import nullcontext
from datetime import timedelta
from typing import TYPE_CHECKING

from pymongo import UpdateOne
from pymongo.errors import PyMongoError

from jobflow.capture.decide import DECISION_FIELDS, misfit_reason
from jobflow.db import commands
from jobflow.embeddings import BadInput, ConfigurationError, InvalidVector, ProviderError, RateLimited, check_vector
from jobflow.embeddings.language import job_language
from jobflow.embeddings.text import RECIPE, TEXTS_PER_JOB, combine, embedded_texts, job_text, recipe_of, text_hash
from jobflow.jobs import queue
from jobflow.models import Job, WorkerStatus
from jobflow.models.fields import vector_to_bson
from jobflow.timeutil import utcnow
from jobflow.worker.threads import DaemonExecutor, Halted

if TYPE_CHECKING:
    from jobflow.embeddings import EmbeddingProvider
    from jobflow.similarity.lists import SimilarLists

log = logging.getLogger("jobflow.worker")

CONFIG_ERROR_RETRY = timedelta(seconds=60)
HALT_POLL_SECONDS = 0.2     # how often a batch waiting for the provider looks whether it must give up


class WorkEntry:
    """One job of a batch that needs embedding."""
    __slots__ = ("item", "job", "texts", "digest", "_language")

    def __init__(self, item: dict, job: dict, texts: list[str], digest: str):
        self.item = item        # its queue item, held by this worker
        self.job = job          # the job as stored, but its vector and lists (DECISION_FIELDS)
        self.texts = texts      # the TEXTS_PER_JOB texts to embed, prepared for the provider
        self.digest = digest    # the hash of the job's text, stored with the vector
        self._language: str | None = None

    @property
    def language(self) -> str:
        """Its ``language`` field, else the language its text reads as (``detect``)."""
        return self.detect()

    def detect(self) -> str:
        """Find the language once: the batch does it while the provider works on the job's call."""
        if self._language is None:
            self._language = job_language(self.job)[0]
        return self._language


class Counters:
    """What a worker has done so far: items processed and failed, tokens used."""

    def __init__(self):
        self.processed = 0
        self.failed = 0
        self.tokens = 0
        self._lock = threading.Lock()

    def add(self, processed: int = 0, failed: int = 0, tokens: int = 0) -> None:
        with self._lock:
            self.processed += processed
            self.failed += failed
            self.tokens += tokens


class BatchProcessor:
    """Embeds claimed items with its provider, stores the vectors, hands them to the lists, settles every item.

    ``blocked_until`` (monotonic) is set when the provider asks this worker to
    wait (rate limit, configuration error); ``trouble`` holds the configuration
    error while it lasts, for the worker's state. Once ``halt`` is set (grace
    period over, rollback) a batch stops waiting for its provider calls and
    raises ``Halted`` without settling anything: whoever set it gives the items back.
    """

    def __init__(self, worker_id: str, provider: EmbeddingProvider, policy: queue.QueuePolicy, counters: Counters,
                 concurrency: int, lists: SimilarLists | None = None, debug: bool = False,
                 halt: threading.Event | None = None):
        self.worker_id = worker_id
        self.provider = provider
        self.policy = policy
        self.counters = counters
        self.concurrency = concurrency
        self.lists = lists
        self.debug = debug
        self.halt = halt or threading.Event()
        self.calls = DaemonExecutor("embed")
        self.blocked_until = 0.0
        self.trouble = ""
        self.current: dict = {}         # the batch in flight: id, size, start (shown on the Workers page)
        self.unflushed: list = []       # items whose lists wait for the next flush (then completed)
        self.last_flush = time.monotonic()

    def run(self, items: list[dict]) -> None:
        """Embed what needs it, store vectors, update lists, settle every item."""
        batch_id = uuid.uuid4().hex[:8]
        self.current = {"id": batch_id, "size": len(items), "startedAt": utcnow()}
        started = time.monotonic()
        job_ids = [i["jobId"] for i in items]
        # A read of 50 jobs at a time: the embedded database holds its readers back while it gathers one answer.
        jobs = {j["_id"]: j for chunk in commands.chunks(job_ids)
                for j in Job._get_collection().find({"_id": {"$in": chunk}}, DECISION_FIELDS)}
        to_embed: list[WorkEntry] = []
        current: list[dict] = []
        for item in items:
            job = jobs.get(item["jobId"])
            if job is None:
                queue.skip(item["_id"], self.worker_id, "job deleted", self.policy)
                continue
            if job.get("status") != "active":
                queue.skip(item["_id"], self.worker_id, f"job is {job.get('status')}", self.policy)
                continue
            problem = misfit_reason(job)
            if problem:     # written by another application in a shape the product cannot use: never embedded
                queue.skip(item["_id"], self.worker_id, f"job cannot be used: {problem}", self.policy)
                continue
            text = job_text(job)
            digest = text_hash(text)
            emb = job.get("embedding") or {}
            if emb.get("status") == "completed" and emb.get("textHash") == digest \
                    and emb.get("model") == self.provider.model and recipe_of(emb) == RECIPE:
                current.append(item)      # unchanged text, model and recipe: never embedded again
                continue
            to_embed.append(WorkEntry(item, job, [self.provider.prepare(t) for t in embedded_texts(job)], digest))
        if current:
            self._settle_current(current)
        if self.debug:
            log.debug("batch %s: %d items, %d to embed, %d already current", batch_id, len(items), len(to_embed),
                      len(current))
        try:
            if to_embed:
                self._embed_all(to_embed, batch_id)
        finally:
            self.current = {}
        if self.debug:
            log.debug("batch %s done in %.2fs", batch_id, time.monotonic() - started)

    def _settle_current(self, items: list[dict]) -> None:
        if self.lists is not None:
            self.lists.ensure_listed([i["jobId"] for i in items], defer=True)
        self.complete_after_flush([i["_id"] for i in items])
        self._count(processed=len(items))

    def _embed_all(self, work: list[WorkEntry], batch_id: str) -> None:
        """At most ``concurrency`` provider calls at once, each group settled as its call ends."""
        groups = self.provider.batches(["\n".join(w.texts) for w in work], inputs_each=TEXTS_PER_JOB)
        waiting = [[work[i] for i in group] for group in groups]
        futures: dict = {}
        while waiting or futures:
            while waiting and len(futures) < self.concurrency:
                group = waiting.pop(0)
                futures[self.calls.submit(self._call, _flat(group))] = group
            # The languages of the jobs in flight, found while the provider works on them (not before the calls).
            for entry in (entry for group in futures.values() for entry in group):
                entry.detect()
            done, _ = wait(list(futures), timeout=HALT_POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in [*done, None]:
                if self.halt.is_set():
                    # Nothing more is settled; the calls still out are abandoned (daemon threads: they end with
                    # their timeout or the process).
                    raise Halted()
                if future is not None:
                    waiting[:0] = self._settle_call(futures.pop(future), future, batch_id)

    def _settle_call(self, group: list[WorkEntry], future, batch_id: str) -> list[list[WorkEntry]]:
        """Store or settle one call's group; the groups to call again (one job each, after a refused input)."""
        try:
            self._store(group, future.result())
        except _Held:
            wait_s = max(self.blocked_until - time.monotonic(), 0.0)
            queue.release([w.item["_id"] for w in group], self.worker_id, delay=timedelta(seconds=wait_s))
        except RateLimited as exc:
            self._on_rate_limit(group, exc)
        except ConfigurationError as exc:
            self._on_config_error(group, exc)
        except BadInput as exc:
            if len(group) > 1:
                return [[one] for one in group]     # one text may be the cause: each alone, the others go through
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
        return []

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
        """Write each valid vector with its own list, then the lists it entered, then complete its item (in that order)."""
        good, bad = [], []
        for n, entry in enumerate(group):
            pair = slice(n * TEXTS_PER_JOB, (n + 1) * TEXTS_PER_JOB)
            try:
                parts = [check_vector(v, self.provider.dimensions) for v in result.vectors[pair]]
                good.append((entry, combine(parts), sum(result.tokens[pair])))
            except InvalidVector as exc:
                bad.append((entry, str(exc)))
        if good:
            ids = [entry.job["_id"] for entry, _, _ in good]
            with self.lists.store(ids) if self.lists is not None else nullcontext():
                own = {}
                if self.lists is not None:
                    # The new vectors ranked first (in memory), so each job's own list goes with its vector in one
                    # write: one write a job less than a list written at the flush (the other lists it enters wait
                    # for the flush, as before).
                    self.lists.on_embedded(ids, [vector for _, vector, _ in good], [entry.digest for entry, _, _ in good],
                                           [entry.language for entry, _, _ in good], defer=True)
                    own = self.lists.take(ids)
                # Stamped as late as it can be: other processes' index syncs find new vectors by this time, looking
                # a few seconds back, so a write that lands long after its stamp could pass them by.
                now = utcnow()
                # The whole embedding at once: every field is written, and a writer's ``embedding: null`` takes it
                # too (a field cannot be set inside null).
                ops = [UpdateOne({"_id": entry.job["_id"]}, {"$set": {"embedding": {
                    "status": "completed", "vector": vector_to_bson(vector), "model": result.model,
                    "dimensions": int(vector.shape[0]), "textHash": entry.digest, "recipe": RECIPE,
                    "language": entry.language, "tokens": int(tokens), "generatedAt": now, "error": None,
                    "retries": int(entry.item.get("attempts", 1)) - 1}, **own.get(entry.job["_id"], {})}})
                    for entry, vector, tokens in good]
                try:
                    commands.write_chunks(ops, lambda chunk: Job._get_collection().bulk_write(chunk, ordered=False))
                except Exception:
                    if own:
                        self.lists.give_back(own)
                    raise
                if own:
                    self.lists.written(own)
            self.complete_after_flush([entry.item["_id"] for entry, _, _ in good])
            self._count(processed=len(good), tokens=sum(t for *_, t in good))
        for entry, error in bad:
            self._fail([entry], f"invalid vector: {error}", retryable=True)

    def complete_after_flush(self, item_ids: list) -> None:
        """Complete these items once their lists are written (``flush_lists``): vector, lists, item, in order."""
        self.unflushed.extend(item_ids)

    def flush_lists(self) -> int:
        """Write the lists changed since the last flush, then complete the items whose lists they are.

        Lists of several batches are written once per flush (a list that changed five times is written once);
        the worker flushes every SIMILARITY_FLUSH_INTERVAL during a drain and whenever the queue is empty.
        """
        written = self.lists.flush() if self.lists is not None else 0
        items, self.unflushed = self.unflushed, []
        if items:
            queue.complete(items, self.worker_id, self.policy)
        self.last_flush = time.monotonic()
        return written

    def _on_rate_limit(self, group, exc: RateLimited) -> None:
        delay = max(exc.retry_after, 0.5)   # _call has already stopped further calls for this long
        # Recorded for the "provider unhealthy" alert: rate limits spend no attempt and leave no queue error.
        WorkerStatus._get_collection().update_one({"workerId": self.worker_id},
                                                  {"$push": {"rateLimitedAt": {"$each": [utcnow()], "$slice": -20}}})
        queue.release([w.item["_id"] for w in group], self.worker_id, delay=timedelta(seconds=delay))
        log.warning("rate limited: %d items wait %.1fs (no attempt spent)", len(group), delay)

    def _on_config_error(self, group, exc: ConfigurationError) -> None:
        queue.release([w.item["_id"] for w in group], self.worker_id)
        if self.trouble != str(exc):
            log.error("stopped claiming: %s; trying again in %ds", exc, CONFIG_ERROR_RETRY.total_seconds())
        self.trouble = str(exc)

    def _count(self, processed: int = 0, failed: int = 0, tokens: int = 0) -> None:
        self.counters.add(processed, failed, tokens)
        if processed and self.trouble and time.monotonic() >= self.blocked_until:
            self.trouble = ""

    def _fail(self, group, error: str, retryable: bool) -> None:
        failed = []
        for entry in group:
            item, job = entry.item, entry.job
            if queue.fail(item, self.worker_id, error, self.policy, retryable=retryable) == "failed":
                failed.append(UpdateOne({"_id": job["_id"], "embedding": None}, {"$set": {"embedding": {}}}))
                failed.append(UpdateOne({"_id": job["_id"]}, {"$set": {
                    # retries = attempts made, so the runbook's query (embedding.retries >= QUEUE_MAX_ATTEMPTS)
                    # finds the jobs that used up their attempts.
                    "embedding.status": "failed", "embedding.error": error[:500],
                    "embedding.retries": int(item.get("attempts", 1))}}))
        if failed:
            Job._get_collection().bulk_write(failed, ordered=True)   # a null embedding becomes {} first
        self._count(failed=len(group))
        log.warning("%d items failed an attempt: %s", len(group), error)


class _Held(Exception):
    """A provider call not made: the provider told this worker to wait (rate limit, configuration error)."""


def _flat(group) -> list[str]:
    """The texts of a group of work entries, in order (each job contributes TEXTS_PER_JOB)."""
    return [text for entry in group for text in entry.texts]
