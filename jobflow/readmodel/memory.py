"""Every active job's card, detail and stored list, held compactly in one process, and the answers built from them.

A job is keyed by its id's 12 bytes. Its card (the JSON each list entry shows) is kept as JSON bytes, its detail
(the JSON of ``/api/jobs/<id>``, description included) compressed, its list as ids and scores. The answers are
the database's answers, built the same way: the stored list minus jobs no longer active, or the fallback (same
category, then same location, newest first); ``language`` keeps entries in that language.
"""
from __future__ import annotations

import heapq
import json
import sys
import threading
import zlib
from array import array
from datetime import datetime
from typing import Any

from bson import ObjectId

from jobflow.embeddings.language import stored_language
from jobflow.jobs.store import job_json
from jobflow.models import Job
from jobflow.models.job import EMBEDDING_STATUSES
from jobflow.similarity.answer import LIST_FIELDS
from jobflow.timeutil import iso

CARD_FIELDS = {"id", *LIST_FIELDS}    # a list entry shows what the database's answer reads of a job
FALLBACK_POOL = 100    # as the database's answer: newest candidates per field when filtered by language


class Entry:
    """One active job."""
    __slots__ = ("card", "detail", "language", "category", "location", "order", "similar", "scores", "computed")

    def __init__(self, doc: dict):
        job = _Plain(doc) if _plain(doc) else Job._from_son(doc)
        detail = job_json(job)
        card = {k: v for k, v in job_json(job, detail=False).items() if k in CARD_FIELDS}
        self.card = json.dumps(card, separators=(",", ":")).encode()
        self.detail = _pack(detail)
        self.language = sys.intern(stored_language(job))
        self.category = sys.intern(job.category) if job.category else None
        self.location = sys.intern(job.location) if job.location else None
        created = job.createdAt.timestamp() if isinstance(job.createdAt, datetime) else 0.0
        # Newest first; of two created at once, the first stored first (as the database's sort returns them).
        self.order = (created, -int.from_bytes(job.id.binary, "big"))
        self.similar, self.scores = _list_of([(e.jobId, e.score or 0.0) for e in job.similarJobs or []
                                              if e.jobId is not None])
        computed = (job.similarityMetadata or {}).get("computedAt")
        self.computed = iso(computed) if isinstance(computed, datetime) else None

    def job(self) -> dict[str, Any]:
        """The detail JSON (``/api/jobs/<id>`` for the public, and the job's page)."""
        return json.loads(zlib.decompress(self.detail))


class Memory:
    """The active jobs of one process; readers and the one writer (the follower) share it under a lock."""

    def __init__(self):
        self.jobs: dict[bytes, Entry] = {}
        self.by_field: dict[str, dict[str, set[bytes]]] = {"category": {}, "location": {}}
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.jobs)

    def put(self, doc: dict) -> None:
        """Hold an active job's current state (a job that is not active is forgotten)."""
        key = doc["_id"].binary
        if doc.get("status") != "active":      # as the database's answers: a job without a status is not listed
            self.forget(key)
            return
        entry = Entry(doc)
        with self.lock:
            self._unindex(key)
            self.jobs[key] = entry
            for name in ("category", "location"):
                value = getattr(entry, name)
                if value:
                    self.by_field[name].setdefault(value, set()).add(key)

    def patch(self, job_id: ObjectId, updated: dict, removed: list) -> bool:
        """Apply a workers' write (a job's list, its embedding) from its change event, with no read; False when the
        write touched anything else or does not fit (the caller reads the job again)."""
        names = [*updated, *removed]
        if not names or any(name.split(".")[0] not in PATCHED for name in names):
            return False
        key = job_id.binary
        entry = self.jobs.get(key)
        if entry is None:
            return True         # not held: not active, or an insert about to be read
        patched = _patched(entry, updated, removed)
        if patched is None:
            return False
        with self.lock:
            if self.jobs.get(key) is not entry:
                return False    # changed meanwhile
            self.jobs[key] = patched
        return True

    def forget(self, key: bytes) -> None:
        with self.lock:
            self._unindex(key)
            self.jobs.pop(key, None)

    def keys(self) -> set[bytes]:
        with self.lock:
            return set(self.jobs)

    def _unindex(self, key: bytes) -> None:
        old = self.jobs.get(key)
        if old is None:
            return
        for name in ("category", "location"):
            value = getattr(old, name)
            bucket = self.by_field[name].get(value) if value else None
            if bucket is not None:
                bucket.discard(key)
                if not bucket:
                    del self.by_field[name][value]

    # ----- answers ----------------------------------------------------------------------------------------------
    def get(self, job_id: ObjectId) -> Entry | None:
        return self.jobs.get(job_id.binary)

    def similar(self, job_id: ObjectId, limit: int, language: str | None, lists_off: bool) -> tuple[bytes, bool] | None:
        """The ``/similar`` body as JSON bytes and whether it is the stored list, or None when the job is not held
        (not active, or not yet seen)."""
        with self.lock:
            entry = self.jobs.get(job_id.binary)
            if entry is None:
                return None
            if entry.similar and entry.computed and not lists_off:
                items = []
                for n in range(len(entry.scores)):
                    other = self.jobs.get(entry.similar[n * 12:n * 12 + 12])
                    if other is None or (language and other.language != language):
                        continue
                    items.append(_item(other, round(entry.scores[n], 4)))
                    if len(items) >= limit:
                        break
                if items or language:
                    return _body(items, True, json.dumps(entry.computed)), True
            items = [_item(other, None) for other in self._fallback(job_id.binary, entry, limit, language)]
            return _body(items, False, "null"), False

    def _fallback(self, key: bytes, entry: Entry, limit: int, language: str | None) -> list[Entry]:
        chosen: list[Entry] = []
        seen = {key}
        for name in ("category", "location"):
            value = getattr(entry, name)
            if not value or len(chosen) >= limit:
                continue
            bucket = self.by_field[name].get(value, ())
            wanted = FALLBACK_POOL if language else limit - len(chosen)
            for other_key in heapq.nlargest(wanted, (k for k in bucket if k not in seen),
                                            key=lambda k: self.jobs[k].order):
                if len(chosen) >= limit:
                    break
                other = self.jobs[other_key]
                if not language or other.language == language:
                    chosen.append(other)
                seen.add(other_key)
        return chosen


# A document whose every field read here has the type the model gives it is read as it is (a model instance costs
# ten times as long); any other goes through the model, which leaves out what does not fit, as the database's
# answer does.
_TYPES = {**{name: str for name in Job.PUBLIC_FIELDS}, "createdAt": datetime, "updatedAt": datetime, "embedding": dict,
          "similarJobs": list, "similarityMetadata": dict}
_EMBEDDING_TYPES = {"status": str, "model": str, "dimensions": int, "tokens": int, "generatedAt": datetime,
                    "language": str, "error": str}


def _plain(doc: dict) -> bool:
    if not isinstance(doc.get("_id"), ObjectId) or doc.get("status") != "active":
        return False
    embedding = doc.get("embedding") or {}
    return (all(_fits(doc.get(name), kind) for name, kind in _TYPES.items())
            and all(_fits(embedding.get(name), kind) for name, kind in _EMBEDDING_TYPES.items())
            and embedding.get("status") in (None, *EMBEDDING_STATUSES) and _entries_fit(doc.get("similarJobs") or []))


class _Plain:
    """A fitting document seen as the model would show it (attributes, None when absent)."""

    def __init__(self, doc: dict):
        self._doc = doc
        self.id = doc["_id"]
        embedding = doc.get("embedding")
        self.embedding = None if embedding is None else _Attributes(embedding, _EMBEDDING_TYPES)
        self.similarJobs = [_Attributes(e, ("jobId", "score")) for e in doc.get("similarJobs") or []]
        self.similarityMetadata = doc.get("similarityMetadata")

    def __getattr__(self, name: str):
        return self._doc.get(name)


class _Attributes:
    def __init__(self, values: dict, names):
        for name in names:
            setattr(self, name, values.get(name))


PATCHED = {"similarJobs", "similarityMetadata", "embedding"}
SHOWN_EMBEDDING = {"status": str, "model": str, "dimensions": int, "tokens": int, "generatedAt": datetime}
HIDDEN_EMBEDDING = {"vector", "textHash", "recipe", "error", "retries"}
_UNCHANGED = object()


def _patched(entry: Entry, updated: dict, removed: list) -> Entry | None:
    """A copy of ``entry`` with the update applied, or None when it does not fit what the model would read."""
    detail = entry.job()
    similar, scores, computed = entry.similar, entry.scores, entry.computed
    embedding = detail.get("embedding")
    language = _UNCHANGED     # unless the embedding's language is written
    changes = [(name, value, False) for name, value in updated.items()] + [(name, None, True) for name in removed]
    for name, value, gone in changes:
        top, _, rest = name.partition(".")
        if top == "similarJobs":
            if rest or not (gone or isinstance(value, list) and _entries_fit(value)):
                return None
            similar, scores = _list_of([(e["jobId"], e["score"]) for e in value or []])
        elif top == "similarityMetadata":
            at = (value or {}).get("computedAt") if not rest else value if rest == "computedAt" else computed
            if not rest and not (gone or isinstance(value, dict)):
                return None
            if rest in ("", "computedAt"):
                computed = iso(at) if isinstance(at, datetime) else None
        elif not rest:                                          # the whole embedding
            if gone or value is None:
                embedding, language = None, None
                continue
            if not isinstance(value, dict) or not all(_fits(value.get(n), kind) for n, kind in SHOWN_EMBEDDING.items()):
                return None
            embedding = {n: (iso(value.get(n)) if n == "generatedAt" else value.get(n)) for n in SHOWN_EMBEDDING}
            language = value.get("language") if isinstance(value.get("language"), str) else None
        elif rest in SHOWN_EMBEDDING:
            if embedding is None or not (gone or _fits(value, SHOWN_EMBEDDING[rest])):
                return None
            embedding[rest] = iso(value) if rest == "generatedAt" and not gone else value
        elif rest == "language":
            if not (gone or isinstance(value, str)):
                return None
            language = value
        elif rest not in HIDDEN_EMBEDDING:
            return None
    detail["embedding"] = embedding
    detail["similarJobsCount"] = len(scores)
    copy = object.__new__(Entry)
    for slot in Entry.__slots__:
        setattr(copy, slot, getattr(entry, slot))
    copy.detail = _pack(detail)
    copy.similar, copy.scores, copy.computed = similar, scores, computed
    if language is not _UNCHANGED:
        copy.language = sys.intern(stored_language({"language": detail.get("language"),
                                                    "embedding": {"language": language}}))
    return copy


def _fits(value, kind) -> bool:
    return value is None or (isinstance(value, kind) and not isinstance(value, bool))


def _entries_fit(entries: list) -> bool:
    """Every entry of a stored list names a job and a numeric score."""
    return all(isinstance(e, dict) and isinstance(e.get("jobId"), ObjectId) and e.get("score") is not None
               and _fits(e.get("score"), (int, float)) for e in entries)


def _list_of(entries: list) -> tuple[bytes, array]:
    """A list held compactly: the ids' 12 bytes each, and the scores."""
    return b"".join(job_id.binary for job_id, _ in entries), array("d", (float(score) for _, score in entries))


def _pack(detail: dict) -> bytes:
    return zlib.compress(json.dumps(detail, separators=(",", ":")).encode(), 1)


def _item(entry: Entry, score) -> bytes:
    return b'{"job":%s,"score":%s,"language":%s}' % (entry.card, json.dumps(score).encode(),
                                                       json.dumps(entry.language).encode())


def _body(items: list[bytes], cached: bool, computed: str) -> bytes:
    return b'{"similarJobs":[%s],"count":%d,"cached":%s,"computedAt":%s}' % (
        b",".join(items), len(items), b"true" if cached else b"false", computed.encode())
