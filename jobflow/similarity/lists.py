"""Similar-jobs lists kept current from the in-memory index and written to MongoDB.

When job X is embedded, X gets its top-N list and every job whose list X now
enters (its score beats that job's weakest entry) or already held X is
recomputed, all in one bulk write. When X closes or is deleted, the lists
that held it are refilled. Other processes' changes arrive through ``sync``.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from datetime import timedelta
from typing import Callable, Iterable, Iterator

import numpy as np
from bson import ObjectId
from pymongo import UpdateOne

from .. import pacing
from ..embeddings.language import stored_language
from ..models import Job, JobDeletion
from ..models.fields import vector_from_bson
from ..timeutil import utcnow
from . import stored_correction
from .correction import UNDETERMINED, LanguageCorrection, counted_languages
from .index import VectorIndex

log = logging.getLogger("jobflow.similarity")

SYNC_MARGIN = timedelta(seconds=5)      # re-read a little of the past: clocks of hosts differ
RECONCILE_PAGE = 200                    # ids per query when reconciling
RECONCILE_EVERY = 60.0                  # seconds between full id reconciliations, at least
RECONCILE_SHARE = 0.02                  # at most this share of the time goes to them (every job read back)
LOAD_CHUNK = 1000
RAW_BLOCK = 1000                        # rows a refit reads back at once (float64 temporaries: 12 MB at 1536-d)
REFIT_MOVEMENT = 0.05                   # a new correction is adopted (and every list recomputed) past this movement
REFIT_CHURN = 0.05                      # a refit is tried once this share of the jobs came or went since the last
VECTOR_FIELDS = {"embedding.vector": 1, "embedding.textHash": 1, "embedding.language": 1, "language": 1}


class SimilarLists:
    """The index of embedded active jobs and the lists derived from it."""

    def __init__(self, dimensions: int | None, top_n: int, min_score: float, model: str, block_size: int = 500,
                 language_balance: bool = True, raw_min_score: float | None = None):
        self.dimensions = dimensions
        self.top_n = top_n
        # The minimum score of corrected scores, and of raw ones (before the first fit, or balance off).
        self.balanced_min_score = min_score
        self.raw_min_score = min_score if raw_min_score is None else raw_min_score
        self.model = model
        self.block_size = block_size
        self.index: VectorIndex | None = VectorIndex(dimensions) if dimensions else None
        self.lists: dict[ObjectId, list[tuple[ObjectId, float]]] = {}
        self.reverse: dict[ObjectId, set[ObjectId]] = defaultdict(set)
        self.hashes: dict[ObjectId, str] = {}
        self.lock = threading.RLock()
        self.synced_at = None
        self._last_reconcile = 0.0
        self._reconcile_every = RECONCILE_EVERY
        # Language balance: vectors enter the index corrected; a job's language and its corrected vector's length
        # before normalising are kept, so the raw vectors can be had back to fit the correction again.
        self.language_balance = language_balance
        self.correction = LanguageCorrection()
        self.languages: dict[ObjectId, str] = {}       # the job's language (field or detected; may be "und")
        self.keys: dict[ObjectId, str | None] = {}      # the transform it is corrected with (LanguageCorrection.keys)
        self.lengths: dict[ObjectId, float] = {}
        self._churn = 0                 # jobs added or removed since the correction in force was fitted
        self.dirty: set[ObjectId] = set()   # lists changed in memory, written at the next flush
        self.storing: set[ObjectId] = set()  # jobs whose vectors this process is storing (``store``)

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else 0

    @property
    def min_score(self) -> float:
        """The minimum score of the scores in use: corrected once a correction is in force, raw before."""
        return self.balanced_min_score if self.correction.active else self.raw_min_score

    def _coll(self):
        return Job._get_collection()

    def _query(self) -> dict:
        return {"status": "active", "embedding.status": "completed", "embedding.model": self.model}

    def _ensure_index(self, dimensions: int) -> None:
        if self.index is None:
            self.dimensions = dimensions
            self.index = VectorIndex(dimensions)

    # ----- loading ------------------------------------------------------------------------------
    def load(self) -> int:
        """Fill the index with every embedded active job of the current model, and read their lists."""
        started = utcnow()
        ids, vectors, languages, count = [], [], [], 0
        with self.lock:
            if self.language_balance:
                try:
                    self.correction = stored_correction.load(self.model)
                except LookupError:     # caught while a new version is written: the first sync adopts it
                    self.correction = LanguageCorrection()
            stored_lists = {}
            cursor = self._coll().find(self._query(), {**VECTOR_FIELDS, "similarJobs": 1}, batch_size=LOAD_CHUNK)
            for doc in cursor:
                vector = vector_from_bson(doc["embedding"].get("vector"))
                if vector is None or (self.dimensions and vector.shape[0] != self.dimensions):
                    continue
                ids.append(doc["_id"])
                vectors.append(vector)
                languages.append(stored_language(doc))
                self.hashes[doc["_id"]] = doc["embedding"].get("textHash")
                stored_lists[doc["_id"]] = [(s["jobId"], float(s["score"])) for s in doc.get("similarJobs") or []
                                            if "jobId" in s and "score" in s]
                if len(ids) >= LOAD_CHUNK:
                    count += self._load_chunk(ids, vectors, languages)
                    ids, vectors, languages = [], [], []
            if ids:
                count += self._load_chunk(ids, vectors, languages)
            for job_id, entries in stored_lists.items():
                self._set_list(job_id, [e for e in entries if self.index is not None and e[0] in self.index])
            self.synced_at = started
        return count

    def _load_chunk(self, ids, vectors, languages) -> int:
        self._upsert(ids, vectors, languages)
        return len(ids)

    def _upsert(self, ids: list, vectors, languages: list[str]) -> None:
        """Raw vectors into the index, corrected for their languages (caller holds the lock)."""
        self._ensure_index(len(vectors[0]))
        corrected, lengths, keys = self.correction.apply(np.vstack(vectors), languages)
        self._churn += sum(1 for i in ids if i not in self.index)
        self.index.upsert(ids, corrected)
        for job_id, language, length, key in zip(ids, languages, lengths.tolist(), keys.tolist()):
            self.languages[job_id] = language
            self.lengths[job_id] = length
            self.keys[job_id] = key

    # ----- list bookkeeping -----------------------------------------------------------------------
    def _set_list(self, job_id: ObjectId, entries: list[tuple[ObjectId, float]]) -> None:
        for old, _ in self.lists.get(job_id, []):
            self.reverse[old].discard(job_id)
        self.lists[job_id] = entries
        for new, _ in entries:
            self.reverse[new].add(job_id)

    def _drop(self, job_id: ObjectId) -> set[ObjectId]:
        """Forget a job; return the jobs whose lists held it."""
        self._set_list(job_id, [])
        self.lists.pop(job_id, None)
        self.hashes.pop(job_id, None)
        self.languages.pop(job_id, None)
        self.lengths.pop(job_id, None)
        self.keys.pop(job_id, None)
        holders = set(self.reverse.pop(job_id, set()))
        return holders

    def _floor(self, job_id: ObjectId) -> float:
        entries = self.lists.get(job_id)
        if not entries or len(entries) < self.top_n:
            return self.min_score
        return entries[-1][1]

    def _recompute(self, ids: Iterable[ObjectId], always: Iterable[ObjectId] | None = None) -> list[ObjectId]:
        """Recompute the lists of ``ids``; the ids whose list changed (all of them unless ``always`` is given:
        then the unchanged ones are left out, except those in ``always``)."""
        ids = [i for i in ids if self.index is not None and i in self.index]
        if not ids:
            return []
        results = self.index.top_k_for_ids(ids, self.top_n, self.min_score)
        keep = None if always is None else set(always)
        changed = []
        for job_id, entries in results.items():
            if keep is None or job_id in keep or self.lists.get(job_id) != entries:
                changed.append(job_id)
            self._set_list(job_id, entries)
        return changed

    def _write(self, ids: Iterable[ObjectId]) -> int:
        """Write these lists as they are in memory, now (the caller holds the lock); they are no longer dirty."""
        ids = list(ids)
        now = utcnow()
        meta = {"computedAt": now, "model": self.model, "comparedWith": len(self), "topN": self.top_n,
                "minScore": self.min_score}
        ops = [UpdateOne({"_id": job_id}, {"$set": {
            "similarJobs": [{"jobId": other, "score": round(score, 6)} for other, score in self.lists.get(job_id, [])],
            "similarityMetadata": meta}}) for job_id in ids]
        # In small bulk writes: a database that serves one request at a time (SecantusDB) answers the API's
        # reads between them instead of after a whole flush, and a worker gives way when they queue (pacing).
        pacing.write_chunks(ops, lambda chunk: self._coll().bulk_write(chunk, ordered=False))
        self.dirty.difference_update(ids)   # only once written: a failed write leaves them to write again
        return len(ids)

    # ----- changes --------------------------------------------------------------------------------
    @contextmanager
    def store(self, ids: list[ObjectId]) -> Iterator[None]:
        """Around this process's write of these jobs' vectors and its ``on_embedded``: a sync that reads
        the new vectors back meanwhile leaves them to it, instead of ranking them as another process's
        (which would read their neighbours' stored lists and write them at once, not at the flush)."""
        with self.lock:
            self.storing.update(ids)
        try:
            yield
        finally:
            with self.lock:
                self.storing.difference_update(ids)

    def on_embedded(self, ids: list[ObjectId], vectors: list[np.ndarray], hashes: list[str | None],
                    languages: list[str] | None = None, only_changed: bool = False, defer: bool = False) -> int:
        """New or changed vectors (raw, as embedded): their lists and every list they enter or change; one bulk write.

        Lists whose entries came out the same are not written (the new jobs' own lists always are).
        ``languages``: each job's language (``stored_language``), for the correction.
        ``only_changed``: write only lists that differ from the stored ones (changes another process
        already wrote, seen by ``sync``).
        ``defer``: mark the lists dirty instead of writing them; ``flush`` writes them (the worker
        coalesces the lists of several batches into one write per flush).
        """
        if not ids:
            return 0
        with self.lock:
            self._upsert(ids, vectors, languages or [UNDETERMINED] * len(ids))
            affected: set[ObjectId] = set(ids)
            for job_id, digest in zip(ids, hashes):
                self.hashes[job_id] = digest
                affected |= self.reverse.get(job_id, set())   # their score with this job may have changed
            # One GEMM for the batch: which jobs' lists do the new vectors enter?
            others, scores = self.index.scores_many(np.vstack([self.index.vector(i) for i in ids]))
            floors = np.fromiter((self._floor(o) for o in others), dtype=np.float32, count=len(others))
            enters = ((scores >= self.min_score) & (scores > floors[None, :])).any(axis=0)
            affected |= set(others[enters].tolist())
            changed = self._recompute(affected, always=ids)
            if only_changed:
                changed = self._differs_from_stored(changed)
            if defer:
                self.dirty.update(changed)
                return len(changed)
            self.dirty.difference_update(changed)
            return self._write(changed)

    def flush(self) -> int:
        """Write every list marked dirty by deferred changes, as it is now in memory; how many."""
        with self.lock:
            return self._write(self.dirty)

    def _differs_from_stored(self, ids: list[ObjectId]) -> list[ObjectId]:
        stored = {d["_id"]: [(s["jobId"], round(float(s["score"]), 6)) for s in d.get("similarJobs") or []]
                  for d in self._coll().find({"_id": {"$in": ids}}, {"similarJobs": 1})}
        return [i for i in ids if stored.get(i) != [(o, round(sc, 6)) for o, sc in self.lists.get(i, [])]]

    def repair(self, chunk: int = 2000) -> int:
        """Write every list that differs from the stored one; how many (after writes may have been lost)."""
        with self.lock:
            ids = list(self.lists)
            changed: list[ObjectId] = []
            for start in range(0, len(ids), chunk):
                changed += self._differs_from_stored(ids[start:start + chunk])
            written = self._write(changed)
            self.dirty.clear()          # every list that differed is written, the dirty ones among them
            return written

    def remove(self, ids: Iterable[ObjectId]) -> int:
        """Jobs closed, deleted or re-embedding: out of the index; the lists that held them refilled."""
        with self.lock:
            holders: set[ObjectId] = set()
            gone = [i for i in ids if self.index is not None and i in self.index]
            for job_id in gone:
                holders |= self._drop(job_id)
            if gone:
                self.index.remove(gone)
                self._churn += len(gone)
            holders -= set(gone)
            return self._write(self._recompute(holders))

    def ensure_listed(self, ids: Iterable[ObjectId], defer: bool = False) -> int:
        """Jobs whose embedding is current (an item claimed again: requeued, or recovered from a worker that
        stopped before its lists were written): their lists, and the lists they enter, computed again."""
        ids = list(ids)
        if not ids:
            return 0
        docs = list(self._coll().find({"_id": {"$in": ids}, **self._query()}, VECTOR_FIELDS))
        found = [(d["_id"], vector_from_bson(d["embedding"]["vector"]), d["embedding"].get("textHash"),
                  stored_language(d))
                 for d in docs if d.get("embedding", {}).get("vector") is not None]
        if not found:
            return 0
        return self.on_embedded(*(list(column) for column in zip(*found)), defer=defer)

    def sync(self) -> None:
        """Apply changes other processes made: embeddings, closes, text edits, deletions, refills."""
        self.follow_stored()
        since = (self.synced_at or utcnow()) - SYNC_MARGIN
        mark = utcnow()
        fields = {"status": 1, "embedding.status": 1, "embedding.model": 1, **VECTOR_FIELDS,
                  "similarityMetadata.refill": 1}
        # Three indexed queries, not one $or: an $or is a collection scan when one branch lacks an index
        # (MongoDB) or whenever the planner cannot union indexes (SecantusDB), every few seconds per worker.
        changed: dict = {}
        for query in ({"updatedAt": {"$gte": since}}, {"embedding.generatedAt": {"$gte": since}},
                      {"similarityMetadata.refill": True}):
            for doc in self._coll().find(query, fields):
                changed.setdefault(doc["_id"], doc)
        changed = list(changed.values())
        deleted = [d["_id"] for d in JobDeletion._get_collection().find({"at": {"$gte": since}}, {"_id": 1})]
        embedded, removed, refill = [], [], []
        with self.lock:
            removed += [i for i in deleted if self.index is not None and i in self.index]
            for doc in changed:
                if doc["_id"] in self.storing:
                    continue                # this process's own batch is storing it: its on_embedded ranks it
                emb = doc.get("embedding") or {}
                usable = (doc.get("status") == "active" and emb.get("status") == "completed"
                          and emb.get("model") == self.model and emb.get("vector") is not None)
                language = stored_language(doc)
                if usable and (doc["_id"] not in self.hashes or self.hashes[doc["_id"]] != emb.get("textHash")
                               or self.index is None or doc["_id"] not in self.index
                               or self.languages.get(doc["_id"]) != language):
                    embedded.append((doc["_id"], vector_from_bson(emb["vector"]), emb.get("textHash"), language))
                elif not usable and self.index is not None and doc["_id"] in self.index:
                    removed.append(doc["_id"])
                elif (doc.get("similarityMetadata") or {}).get("refill"):
                    refill.append(doc["_id"])
            if removed:
                self.remove(removed)
            if embedded:
                self.on_embedded(*(list(column) for column in zip(*embedded)), only_changed=True)
            if refill:
                self._write(self._recompute(refill) or [])
                self._coll().update_many({"_id": {"$in": refill}}, {"$unset": {"similarityMetadata.refill": ""}})
            self.synced_at = mark
        if time.monotonic() - self._last_reconcile > self._reconcile_every:
            self.reconcile()

    def reconcile(self) -> int:
        """Drop index rows whose job no longer exists or no longer qualifies (deleted by others).

        A backstop (deletions and closes reach the index through the sync): it reads every indexed job back,
        which on the embedded database costs seconds at 10,000 jobs, so it runs every RECONCILE_EVERY or
        every 50 times its last duration, whichever is longer (at most RECONCILE_SHARE of the time).
        """
        started = self._last_reconcile = time.monotonic()
        if self.index is None or not len(self.index):
            return 0
        with self.lock:
            ids = list(self.index.ids())
        live = self._still_qualifying(ids)
        self._reconcile_every = max(RECONCILE_EVERY, (time.monotonic() - started) / RECONCILE_SHARE)
        with self.lock:   # a job added meanwhile is not among ``ids``, so never taken for stale
            stale = [i for i in ids if i not in live and i in self.index]
        if stale:
            self.remove(stale)
        return len(stale)

    def _still_qualifying(self, ids: list) -> set:
        """Which of ``ids`` still belong in the index, asked a page of ids at a time.

        Short lookups by ``_id`` instead of one scan of every job: a database that serves reads one at
        a time (SecantusDB) keeps answering the API between the pages.
        """
        live: set = set()
        for start in range(0, len(ids), RECONCILE_PAGE):
            page = ids[start:start + RECONCILE_PAGE]
            live.update(d["_id"] for d in self._coll().find({"_id": {"$in": page}, **self._query()}, {"_id": 1}))
        return live

    # ----- recompute all ------------------------------------------------------------------------------
    def recompute_all(self, progress: Callable[[int, int], None] = lambda done, total: None) -> int:
        """Every list again, by blocked matrix products (bounded memory), written block by block."""
        if self.index is None:
            return 0
        total, done = len(self.index), 0
        for block_ids, block_lists in self.index.all_top_k(self.top_n, self.min_score, self.block_size):
            with self.lock:
                for job_id, entries in zip(block_ids, block_lists):
                    self._set_list(job_id, entries)
                self._write(block_ids)
            done += len(block_ids)
            progress(done, total)
        stored_correction.lists_computed_with(self.model, self.correction.version)
        return done

    # ----- language correction ------------------------------------------------------------------------
    def raw_blocks(self, block: int = RAW_BLOCK):
        """(ids, raw unit vectors, languages) of the whole index, a block at a time, back from corrected ones.

        The languages are what a fit counts each job as: its own, or for an undetermined one the language it
        is corrected as (the nearest mean), so that bare titles count towards their language's statistics.
        """
        if self.index is None:
            return
        for start in range(0, len(self.index), block):
            with self.lock:
                ids = self.index.ids()[start:start + block]
                if not ids:
                    return
                units = self.index.vectors(ids)
                languages = [self.languages.get(i, UNDETERMINED) for i in ids]
                keys = [self.keys.get(i) for i in ids]
                lengths = [self.lengths.get(i, 1.0) for i in ids]
                correction = self.correction
            yield ids, correction.invert(units, lengths, keys), counted_languages(languages, keys)

    def follow_stored(self) -> int:
        """Adopt the version in force in the database when it is not this one's; the version in force."""
        if not self.language_balance:
            return self.correction.version
        version = int(stored_correction.header(self.model).get("version") or 0)
        if version != self.correction.version:
            try:
                self.adopt(stored_correction.load(self.model))
            except LookupError:
                pass        # caught between a new version's documents and its header: the next sync adopts it
        return version

    def refit_due(self) -> bool:
        """Whether enough jobs came or went since the correction in force was fitted to try a new fit."""
        if not self.language_balance or self.index is None or not len(self.index):
            return False
        # Before the first fit any new job may complete a language's MIN_JOBS; after it, a share of the jobs.
        return self._churn >= (REFIT_CHURN * len(self.index) if self.correction.active else 1)

    def refit(self, force: bool = False) -> float | None:
        """Fit the correction to the jobs now indexed; adopt and store it when it moves vectors past
        REFIT_MOVEMENT (or the first time). Returns the movement when adopted, else None.

        Run by one process at a time (the recompute lease): the caller then writes every list.
        """
        if not self.language_balance or self.index is None or not (force or self.refit_due()):
            return None
        in_force = self.follow_stored()      # a fit is numbered after the newest version, never beside it
        with self.lock:
            self._churn = 0         # jobs that come or go during the fit count towards the next one
        jobs = 0

        def blocks():
            nonlocal jobs
            for _, raw, languages in self.raw_blocks():
                jobs += len(raw)
                yield raw, languages

        fitted, moved, adopt = self.correction.refit(blocks(), max(in_force, self.correction.version) + 1,
                                                     REFIT_MOVEMENT)
        if not fitted.active:
            return None
        if not adopt:
            log.info("language correction fitted on %d jobs moves vectors by %.3f (at most %.2f): kept version %d",
                     jobs, moved, REFIT_MOVEMENT, self.correction.version)
            return None
        stored_correction.save(self.model, fitted, jobs, moved)
        log.info("language correction version %d fitted on %d jobs (%s), moves vectors by %.3f: adopted",
                 fitted.version, jobs, ", ".join(f"{k} {v}" for k, v in fitted.counts().items()), moved)
        self.adopt(fitted)
        return moved

    def adopt(self, correction: LanguageCorrection) -> None:
        """Re-correct every indexed vector with ``correction`` and recompute every list in memory (no writes)."""
        with self.lock:
            if self.index is not None and len(self.index):
                # Block by block: rows not reached yet are still corrected by the old version, which raw_blocks
                # inverts (the lock is held throughout, so nothing else changes the index meanwhile).
                for ids, raw, _ in self.raw_blocks():
                    corrected, lengths, keys = correction.apply(raw, [self.languages[i] for i in ids])
                    self.index.upsert(ids, corrected)
                    self.lengths.update(zip(ids, lengths.tolist()))
                    self.keys.update(zip(ids, keys.tolist()))
            self.correction = correction
            self._churn = 0
            if self.index is not None:
                for block_ids, block_lists in self.index.all_top_k(self.top_n, self.min_score, self.block_size):
                    for job_id, entries in zip(block_ids, block_lists):
                        self._set_list(job_id, entries)
        log.info("similarity index re-corrected with language correction version %d (%d jobs)",
                 correction.version, len(self))

    def refit_and_recompute(self, progress: Callable[[int, int], None] = lambda done, total: None) -> int:
        """The full recompute: fit the correction again (adopted past REFIT_MOVEMENT), then every list written."""
        if self.refit(force=True) is not None:      # adopted: every list is already recomputed in memory
            return self.write_all(progress)
        return self.recompute_all(progress)

    def stored_lists_stale(self) -> bool:
        """Whether the stored lists were last fully computed with another correction than the one in force."""
        head = stored_correction.header(self.model)
        in_force = int(head.get("version") or 0) if self.language_balance else 0
        return bool(head) and int(head.get("listsVersion") or 0) != in_force

    def write_all(self, progress: Callable[[int, int], None] = lambda done, total: None) -> int:
        """Write every list as it is in memory, a block at a time; records the correction the lists were made with."""
        with self.lock:
            # Lists waiting for a flush first: at a drain's end they were held back for this write (process_queue).
            ids = sorted(self.lists, key=lambda i: i not in self.dirty)
        total, done = len(ids), 0
        for start in range(0, total, self.block_size):
            with self.lock:
                block = [i for i in ids[start:start + self.block_size] if i in self.lists]
                self._write(block)
            done += len(block)
            progress(done, total)
        stored_correction.lists_computed_with(self.model, self.correction.version)
        return done
