"""Similar-jobs lists kept current from the in-memory index and written to MongoDB.

When job X is embedded, X gets its top-N list and every job whose list X now
enters (its score beats that job's weakest entry) or already held X is
recomputed, all in one bulk write. When X closes or is deleted, the lists
that held it are refilled. Other processes' changes arrive through ``sync``.
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import numpy as np
from bson import ObjectId
from pymongo import UpdateOne

from jobflow.db import commands
from jobflow.embeddings import text
from jobflow.embeddings.language import stored_language
from jobflow.models import Job
from jobflow.models.fields import vector_from_bson
from jobflow.similarity import balance, stored_correction, sync, upgrade
from jobflow.similarity.correction import UNDETERMINED, LanguageCorrection
from jobflow.similarity.index import VectorIndex
from jobflow.similarity.sync import VECTOR_FIELDS
from jobflow.timeutil import utcnow

log = logging.getLogger("jobflow.similarity")

LOAD_CHUNK = 1000


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
        self.entries: dict[ObjectId, list[tuple[ObjectId, float]]] = {}
        self.reverse: dict[ObjectId, set[ObjectId]] = defaultdict(set)
        self.hashes: dict[ObjectId, str] = {}
        self.lock = threading.RLock()
        self.synced_at = self.reconciled_at = None     # when the last sync and the last reconcile began
        self.last_reconcile = 0.0       # monotonic time of the last reconcile, and the pause before the next
        self.reconcile_every = sync.RECONCILE_EVERY
        # Language balance: vectors enter the index corrected; a job's language and its corrected vector's length
        # before normalising are kept, so the raw vectors can be had back to fit the correction again.
        self.language_balance = language_balance
        self.correction = LanguageCorrection()
        self.languages: dict[ObjectId, str] = {}       # the job's language (field or detected; may be "und")
        self.keys: dict[ObjectId, str | None] = {}      # the transform it is corrected with (LanguageCorrection.keys)
        self.lengths: dict[ObjectId, float] = {}
        self.churn = 0                 # jobs added or removed since the correction in force was fitted
        self.dirty: set[ObjectId] = set()   # lists changed in memory, written at the next flush
        self.storing: set[ObjectId] = set()  # jobs whose vectors this process is storing (``store``)
        self.taken: dict[ObjectId, list] = {}  # lists ``take`` gave to a vector write, as they were then
        # An upgrade (a new recipe or model) under way: stored lists of the old kind that the new index cannot yet
        # match in length are kept, and written once no active job of the old kind is left.
        self.held: set[ObjectId] = set()
        self._upgrade: tuple[float, bool] | None = None    # (when checked, whether under way)

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else 0

    @property
    def min_score(self) -> float:
        """The minimum score of the scores in use: corrected once a correction is in force, raw before."""
        return self.balanced_min_score if self.correction.active else self.raw_min_score

    def collection(self):
        """The jobs collection the lists are written to."""
        return Job._get_collection()

    def indexed_query(self) -> dict:
        """The jobs that belong in the index: active, embedded, with this model and the current recipe."""
        return {"status": "active", "embedding.status": "completed", "embedding.model": self.model,
                "embedding.recipe": text.recipe_query()}

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
            self._upgrade = None
            if self.language_balance:
                try:
                    self.correction = stored_correction.load(self.model)
                except LookupError:     # caught while a new version is written: the first sync adopts it
                    self.correction = LanguageCorrection()
            stored_lists, refill = {}, []     # refill: lists an earlier version flagged when a job left them
            cursor = self.collection().find(self.indexed_query(), {**VECTOR_FIELDS, "similarJobs": 1,
                                                                   "similarityMetadata.refill": 1}, batch_size=LOAD_CHUNK)
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
                if (doc.get("similarityMetadata") or {}).get("refill"):
                    refill.append(doc["_id"])
                if len(ids) >= LOAD_CHUNK:
                    count += self._load_chunk(ids, vectors, languages)
                    ids, vectors, languages = [], [], []
            if ids:
                count += self._load_chunk(ids, vectors, languages)
            for job_id, entries in stored_lists.items():
                self._set_list(job_id, [e for e in entries if self.index is not None and e[0] in self.index])
            self.dirty.update(self.recompute(refill))       # written (and the flag with it) at the next flush
            self.synced_at = self.reconciled_at = started
        return count

    def _load_chunk(self, ids, vectors, languages) -> int:
        self._upsert(ids, vectors, languages)
        return len(ids)

    def _upsert(self, ids: list, vectors, languages: list[str]) -> None:
        """Raw vectors into the index, corrected for their languages (caller holds the lock)."""
        self._ensure_index(len(vectors[0]))
        corrected, lengths, keys = self.correction.apply(np.vstack(vectors), languages)
        self.churn += sum(1 for i in ids if i not in self.index)
        self.index.upsert(ids, corrected)
        for job_id, language, length, key in zip(ids, languages, lengths.tolist(), keys.tolist()):
            self.languages[job_id] = language
            self.lengths[job_id] = length
            self.keys[job_id] = key

    # ----- list bookkeeping -----------------------------------------------------------------------
    def _set_list(self, job_id: ObjectId, entries: list[tuple[ObjectId, float]]) -> None:
        for old, _ in self.entries.get(job_id, []):
            self.reverse[old].discard(job_id)
        self.entries[job_id] = entries
        for new, _ in entries:
            self.reverse[new].add(job_id)

    def _drop(self, job_id: ObjectId) -> set[ObjectId]:
        """Forget a job; return the jobs whose lists held it."""
        self._set_list(job_id, [])
        self.entries.pop(job_id, None)
        self.hashes.pop(job_id, None)
        self.languages.pop(job_id, None)
        self.lengths.pop(job_id, None)
        self.keys.pop(job_id, None)
        holders = set(self.reverse.pop(job_id, set()))
        return holders

    def _floor(self, job_id: ObjectId) -> float:
        entries = self.entries.get(job_id)
        if not entries or len(entries) < self.top_n:
            return self.min_score
        return entries[-1][1]

    def recompute(self, ids: Iterable[ObjectId], always: Iterable[ObjectId] | None = None) -> list[ObjectId]:
        """Recompute the lists of ``ids``; the ids whose list changed (all of them unless ``always`` is given:
        then the unchanged ones are left out, except those in ``always``)."""
        ids = [i for i in ids if self.index is not None and i in self.index]
        if not ids:
            return []
        results = self.index.top_k_for_ids(ids, self.top_n, self.min_score)
        keep = None if always is None else set(always)
        changed = []
        for job_id, entries in results.items():
            if keep is None or job_id in keep or self.entries.get(job_id) != entries:
                changed.append(job_id)
            self._set_list(job_id, entries)
        return changed

    def upgrading(self) -> bool:
        """Whether some active job is still embedded with another model or recipe (``upgrade``)."""
        return upgrade.under_way(self)

    def write(self, ids: Iterable[ObjectId]) -> int:
        """Write these lists as they are in memory, now (the caller holds the lock); they are no longer dirty."""
        ids = list(ids)
        if ids and self.upgrading():
            self.dirty.difference_update(ids)      # those held back wait in ``held``, not among the dirty
            ids = upgrade.writable(self, ids)
        ops = [UpdateOne({"_id": job_id}, {"$set": fields}) for job_id, fields in self._fields(ids).items()]
        # In small bulk writes: a database that serves one request at a time (SecantusDB) answers the API's
        # reads between them instead of after a whole flush, and a worker gives way when they queue (pacing).
        commands.write_chunks(ops, lambda chunk: self.collection().bulk_write(chunk, ordered=False))
        self.dirty.difference_update(ids)   # only once written: a failed write leaves them to write again
        return len(ids)

    def _fields(self, ids: list[ObjectId]) -> dict[ObjectId, dict]:
        meta = {"computedAt": utcnow(), "model": self.model, "recipe": text.RECIPE, "comparedWith": len(self),
                "topN": self.top_n, "minScore": self.min_score}
        return {i: {"similarJobs": [{"jobId": o, "score": round(sc, 6)} for o, sc in self.entries.get(i, [])],
                    "similarityMetadata": meta} for i in ids}

    def take(self, ids: list[ObjectId]) -> dict[ObjectId, dict]:
        """These jobs' own lists, as fields to write with their vectors in one write; no longer dirty (a failed
        write gives them back). None during an upgrade: ``write`` decides which lists it may write."""
        with self.lock:
            if not ids or self.upgrading():
                return {}
            self.dirty.difference_update(ids)
            self.taken.update((i, self.entries.get(i)) for i in ids)
            return self._fields(ids)

    def written(self, taken: dict[ObjectId, dict]) -> None:
        """The lists ``take`` gave are stored: those changed in memory since (the index sync took a closed job out
        of them and wrote them before this older copy landed) are dirty again, for the next flush."""
        with self.lock:
            for i in taken:
                then = self.taken.pop(i, None)
                if i in self.entries and self.entries[i] is not then:
                    self.dirty.add(i)

    def give_back(self, taken: dict[ObjectId, dict]) -> None:
        with self.lock:
            for i in taken:
                self.taken.pop(i, None)
            self.dirty.update(i for i in taken if i in self.entries)

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
            changed = self.recompute(affected, always=ids)
            if only_changed:
                changed = self._differs_from_stored(changed)
            if defer:
                self.dirty.update(changed)
                return len(changed)
            self.dirty.difference_update(changed)
            return self.write(changed)

    def flush(self) -> int:
        """Write every list marked dirty by deferred changes, as it is now in memory; how many."""
        with self.lock:
            return self.write(self.dirty)

    def _differs_from_stored(self, ids: list[ObjectId]) -> list[ObjectId]:
        stored = {d["_id"]: [(s["jobId"], round(float(s["score"]), 6)) for s in d.get("similarJobs") or []]
                  for chunk in commands.chunks(ids)      # a long $in costs SecantusDB its square
                  for d in self.collection().find({"_id": {"$in": list(chunk)}}, {"similarJobs": 1})}
        return [i for i in ids if stored.get(i) != [(o, round(sc, 6)) for o, sc in self.entries.get(i, [])]]

    def repair(self) -> int:
        """Write every list that differs from the stored one; how many (after writes may have been lost)."""
        with self.lock:
            changed = self._differs_from_stored(list(self.entries))
            written = self.write(changed)
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
                self.churn += len(gone)
                self.held.difference_update(gone)
            holders -= set(gone)
            return self.write(self.recompute(holders))

    def ensure_listed(self, ids: Iterable[ObjectId], defer: bool = False, only_changed: bool = False) -> int:
        """Jobs whose embedding is current (an item claimed again, or a job the sync passed by), but those this
        process is storing: read and ranked again with the lists they enter (``on_embedded``); how many."""
        docs = [d for chunk in commands.chunks(list(ids))     # a long $in costs SecantusDB its square
                for d in self.collection().find({"_id": {"$in": list(chunk)}, **self.indexed_query()}, VECTOR_FIELDS)]
        vectors = [(d, vector_from_bson(d["embedding"].get("vector"))) for d in docs]
        found = [(d["_id"], v, d["embedding"].get("textHash"), stored_language(d)) for d, v in vectors
                 if v is not None and (not self.dimensions or v.shape[0] == self.dimensions)]
        with self.lock:
            found = [f for f in found if f[0] not in self.storing]
            if found:
                self.on_embedded(*(list(column) for column in zip(*found)), only_changed=only_changed, defer=defer)
        return len(found)

    def sync(self) -> None:
        """Apply changes other processes made (``sync.py``); write the lists kept through an upgrade once it is over."""
        sync.follow_changes(self)
        upgrade.settle(self)

    def reconcile(self) -> int:
        """Drop index rows that no longer qualify, rank jobs the sync passed by (``sync.py``); how many."""
        return sync.reconcile(self)

    # ----- recompute all ------------------------------------------------------------------------------
    def recompute_all(self, progress: Callable[[int, int], None] = lambda done, total: None) -> int:
        """Every list again, by blocked matrix products (bounded memory), written block by block."""
        if self.index is None:
            return 0
        total, done = len(self.index), 0
        for block_ids, block_lists in self.index.all_top_k(self.top_n, self.min_score, self.block_size):
            with self.lock:
                # A block is computed outside the lock: a job the index sync took out meanwhile (closed, deleted)
                # must not come back in a list written now, nor get one.
                kept = [(job_id, [e for e in entries if e[0] in self.index])
                        for job_id, entries in zip(block_ids, block_lists) if job_id in self.index]
                for job_id, entries in kept:
                    self._set_list(job_id, entries)
                self.write([job_id for job_id, _ in kept])
            done += len(block_ids)
            progress(done, total)
        stored_correction.lists_computed_with(self.model, self.correction.version)
        return done

    # ----- language correction (``balance.py``) ---------------------------------------------------------
    def raw_blocks(self, block: int = balance.RAW_BLOCK):
        """(ids, raw unit vectors, languages) of the whole index, a block at a time."""
        return balance.raw_blocks(self, block)

    def follow_stored(self) -> int:
        """Adopt the version in force in the database when it is not this one's; the version in force."""
        return balance.follow_stored(self)

    def refit_due(self) -> bool:
        """Whether enough jobs came or went since the correction in force was fitted to try a new fit."""
        return balance.refit_due(self)

    def refit(self, force: bool = False) -> float | None:
        """Fit the correction again; the movement when the fit is adopted, else None."""
        return balance.refit(self, force)

    def refit_and_recompute(self, progress: Callable[[int, int], None] = lambda done, total: None) -> int:
        """The full recompute: fit the correction again (adopted past balance.REFIT_MOVEMENT), then every list written."""
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
            # Lists waiting for a flush first (a full recompute may come due while a drain runs).
            ids = sorted(self.entries, key=lambda i: i not in self.dirty)
        total, done = len(ids), 0
        for start in range(0, total, self.block_size):
            with self.lock:
                block = [i for i in ids[start:start + self.block_size] if i in self.entries]
                self.write(block)
            done += len(block)
            progress(done, total)
        stored_correction.lists_computed_with(self.model, self.correction.version)
        return done
