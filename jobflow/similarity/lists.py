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
from datetime import timedelta
from typing import Callable, Iterable

import numpy as np
from bson import ObjectId
from pymongo import UpdateOne

from ..models import Job
from ..models.fields import vector_from_bson
from ..timeutil import utcnow
from .index import VectorIndex

log = logging.getLogger("jobflow.similarity")

SYNC_MARGIN = timedelta(seconds=5)      # re-read a little of the past: clocks of hosts differ
RECONCILE_PAGE = 200                    # ids per query when reconciling
RECONCILE_EVERY = 60.0                  # seconds between full id reconciliations
LOAD_CHUNK = 5000


class SimilarLists:
    """The index of embedded active jobs and the lists derived from it."""

    def __init__(self, dimensions: int | None, top_n: int, min_score: float, model: str, block_size: int = 500):
        self.dimensions = dimensions
        self.top_n = top_n
        self.min_score = min_score
        self.model = model
        self.block_size = block_size
        self.index: VectorIndex | None = VectorIndex(dimensions) if dimensions else None
        self.lists: dict[ObjectId, list[tuple[ObjectId, float]]] = {}
        self.reverse: dict[ObjectId, set[ObjectId]] = defaultdict(set)
        self.hashes: dict[ObjectId, str] = {}
        self.lock = threading.RLock()
        self.synced_at = None
        self._last_reconcile = 0.0

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else 0

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
        ids, vectors, count = [], [], 0
        with self.lock:
            stored_lists = {}
            cursor = self._coll().find(self._query(), {"embedding.vector": 1, "embedding.textHash": 1,
                                                        "similarJobs": 1}, batch_size=LOAD_CHUNK)
            for doc in cursor:
                vector = vector_from_bson(doc["embedding"].get("vector"))
                if vector is None or (self.dimensions and vector.shape[0] != self.dimensions):
                    continue
                ids.append(doc["_id"])
                vectors.append(vector)
                self.hashes[doc["_id"]] = doc["embedding"].get("textHash")
                stored_lists[doc["_id"]] = [(s["jobId"], float(s["score"])) for s in doc.get("similarJobs") or []
                                            if "jobId" in s and "score" in s]
                if len(ids) >= LOAD_CHUNK:
                    count += self._load_chunk(ids, vectors)
                    ids, vectors = [], []
            if ids:
                count += self._load_chunk(ids, vectors)
            for job_id, entries in stored_lists.items():
                self._set_list(job_id, [e for e in entries if self.index is not None and e[0] in self.index])
            self.synced_at = started
        return count

    def _load_chunk(self, ids, vectors) -> int:
        self._ensure_index(len(vectors[0]))
        self.index.upsert(ids, np.vstack(vectors))
        return len(ids)

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
        holders = set(self.reverse.pop(job_id, set()))
        return holders

    def _floor(self, job_id: ObjectId) -> float:
        entries = self.lists.get(job_id)
        if not entries or len(entries) < self.top_n:
            return self.min_score
        return entries[-1][1]

    def _recompute(self, ids: Iterable[ObjectId]) -> list[ObjectId]:
        ids = [i for i in ids if self.index is not None and i in self.index]
        if not ids:
            return []
        results = self.index.top_k_for_ids(ids, self.top_n, self.min_score)
        for job_id, entries in results.items():
            self._set_list(job_id, entries)
        return ids

    def _write(self, ids: Iterable[ObjectId]) -> int:
        ids = list(ids)
        if not ids:
            return 0
        now = utcnow()
        meta = {"computedAt": now, "model": self.model, "comparedWith": len(self), "topN": self.top_n,
                "minScore": self.min_score}
        ops = [UpdateOne({"_id": job_id}, {"$set": {
            "similarJobs": [{"jobId": other, "score": round(score, 6)} for other, score in self.lists.get(job_id, [])],
            "similarityMetadata": meta}}) for job_id in ids]
        self._coll().bulk_write(ops, ordered=False)
        return len(ops)

    # ----- changes --------------------------------------------------------------------------------
    def on_embedded(self, ids: list[ObjectId], vectors: list[np.ndarray], hashes: list[str | None],
                    only_changed: bool = False) -> int:
        """New or changed vectors: their lists and every list they enter or change; one bulk write.

        ``only_changed``: write only lists that differ from the stored ones (changes another process
        already wrote, seen by ``sync``).
        """
        if not ids:
            return 0
        with self.lock:
            self._ensure_index(len(vectors[0]))
            self.index.upsert(ids, np.vstack(vectors))
            affected: set[ObjectId] = set(ids)
            for job_id, digest in zip(ids, hashes):
                self.hashes[job_id] = digest
                affected |= self.reverse.get(job_id, set())   # their score with this job may have changed
            # One GEMM for the batch: which jobs' lists do the new vectors enter?
            others, scores = self.index.scores_many(np.vstack([self.index.vector(i) for i in ids]))
            floors = np.fromiter((self._floor(o) for o in others), dtype=np.float32, count=len(others))
            enters = ((scores >= self.min_score) & (scores > floors[None, :])).any(axis=0)
            affected |= set(others[enters].tolist())
            changed = self._recompute(affected)
            if only_changed:
                changed = self._differs_from_stored(changed)
            return self._write(changed)

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
            return self._write(changed)

    def remove(self, ids: Iterable[ObjectId]) -> int:
        """Jobs closed, deleted or re-embedding: out of the index; the lists that held them refilled."""
        with self.lock:
            holders: set[ObjectId] = set()
            gone = [i for i in ids if self.index is not None and i in self.index]
            for job_id in gone:
                holders |= self._drop(job_id)
            if gone:
                self.index.remove(gone)
            holders -= set(gone)
            return self._write(self._recompute(holders))

    def ensure_listed(self, ids: Iterable[ObjectId]) -> int:
        """Jobs whose embedding is current: put them in the index (from the database) if missing."""
        with self.lock:
            missing = [i for i in ids if self.index is None or i not in self.index or i not in self.lists]
        if not missing:
            return 0
        docs = list(self._coll().find({"_id": {"$in": missing}, **self._query()},
                                      {"embedding.vector": 1, "embedding.textHash": 1}))
        pairs = [(d["_id"], vector_from_bson(d["embedding"]["vector"]), d["embedding"].get("textHash")) for d in docs
                 if d.get("embedding", {}).get("vector") is not None]
        if not pairs:
            return 0
        return self.on_embedded([p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs])

    def sync(self) -> None:
        """Apply changes other processes made: embeddings, closes, text edits, deletions, refills."""
        since = (self.synced_at or utcnow()) - SYNC_MARGIN
        mark = utcnow()
        fields = {"status": 1, "embedding.status": 1, "embedding.model": 1, "embedding.textHash": 1,
                  "embedding.vector": 1, "similarityMetadata.refill": 1}
        # Three indexed queries, not one $or: an $or is a collection scan when one branch lacks an index
        # (MongoDB) or whenever the planner cannot union indexes (SecantusDB), every few seconds per worker.
        changed: dict = {}
        for query in ({"updatedAt": {"$gte": since}}, {"embedding.generatedAt": {"$gte": since}},
                      {"similarityMetadata.refill": True}):
            for doc in self._coll().find(query, fields):
                changed.setdefault(doc["_id"], doc)
        changed = list(changed.values())
        embedded, removed, refill = [], [], []
        with self.lock:
            for doc in changed:
                emb = doc.get("embedding") or {}
                usable = (doc.get("status") == "active" and emb.get("status") == "completed"
                          and emb.get("model") == self.model and emb.get("vector") is not None)
                if usable and (doc["_id"] not in self.hashes or self.hashes[doc["_id"]] != emb.get("textHash")
                               or self.index is None or doc["_id"] not in self.index):
                    embedded.append((doc["_id"], vector_from_bson(emb["vector"]), emb.get("textHash")))
                elif not usable and self.index is not None and doc["_id"] in self.index:
                    removed.append(doc["_id"])
                elif (doc.get("similarityMetadata") or {}).get("refill"):
                    refill.append(doc["_id"])
            if removed:
                self.remove(removed)
            if embedded:
                self.on_embedded([e[0] for e in embedded], [e[1] for e in embedded], [e[2] for e in embedded],
                                 only_changed=True)
            if refill:
                self._write(self._recompute(refill) or [])
                self._coll().update_many({"_id": {"$in": refill}}, {"$unset": {"similarityMetadata.refill": ""}})
            self.synced_at = mark
        if time.monotonic() - self._last_reconcile > RECONCILE_EVERY:
            self.reconcile()

    def reconcile(self) -> int:
        """Drop index rows whose job no longer exists or no longer qualifies (deleted by others)."""
        self._last_reconcile = time.monotonic()
        if self.index is None or not len(self.index):
            return 0
        with self.lock:
            ids = list(self.index.ids())
        live = self._still_qualifying(ids)
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
        return done
