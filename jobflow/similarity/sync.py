"""Bringing a process's similarity index in step with what other processes wrote.

``follow_changes`` (the worker's index sync, every few seconds) reads the jobs
changed, embedded or deleted since the last sync;
``reconcile`` is the backstop that reads every indexed job back, paced so it
takes a small share of the time. Both act on a ``SimilarLists``.
"""
from __future__ import annotations

import time
from datetime import timedelta

from jobflow.embeddings import text
from jobflow.embeddings.language import stored_language
from jobflow.models import JobChange, JobDeletion
from jobflow.models.fields import vector_from_bson
from jobflow.timeutil import utcnow

SYNC_MARGIN = timedelta(seconds=5)      # re-read a little of the past: clocks of hosts differ
RECONCILE_PAGE = 50                     # ids per query when reconciling (a long $in costs SecantusDB its square)
RECONCILE_EVERY = 60.0                  # seconds between full id reconciliations, at least
RECONCILE_SHARE = 0.02                  # at most this share of the time goes to them (every job read back)
VECTOR_FIELDS = {"embedding.vector": 1, "embedding.textHash": 1, "embedding.language": 1, "language": 1}


def follow_changes(lists) -> None:
    """Apply changes other processes made: embeddings, closes, text edits, deletions."""
    lists.follow_stored()
    since = (lists.synced_at or utcnow()) - SYNC_MARGIN
    mark = utcnow()
    fields = {"status": 1, "embedding.status": 1, "embedding.model": 1, "embedding.recipe": 1, **VECTOR_FIELDS}
    # Two indexed queries, not one $or: an $or is a collection scan when one branch lacks an index
    # (MongoDB) or whenever the planner cannot union indexes (SecantusDB), every few seconds per worker.
    changed: dict = {}
    for query in ({"updatedAt": {"$gte": since}}, {"embedding.generatedAt": {"$gte": since}}):
        for doc in lists.collection().find(query, fields):
            changed.setdefault(doc["_id"], doc)
    # Jobs that change capture saw another application close, reopen or spoil (their updatedAt may be untouched).
    noted = [d["_id"] for d in JobChange._get_collection().find({"at": {"$gte": since}}, {"_id": 1})
             if d["_id"] not in changed]
    for start in range(0, len(noted), RECONCILE_PAGE):
        for doc in lists.collection().find({"_id": {"$in": noted[start:start + RECONCILE_PAGE]}}, fields):
            changed.setdefault(doc["_id"], doc)
    changed = list(changed.values())
    deleted = [d["_id"] for d in JobDeletion._get_collection().find({"at": {"$gte": since}}, {"_id": 1})]
    embedded, removed = [], []
    with lists.lock:
        removed += [i for i in deleted if lists.index is not None and i in lists.index]
        for doc in changed:
            if doc["_id"] in lists.storing:
                continue                # this process's own batch is storing it: its on_embedded ranks it
            emb = doc.get("embedding") if isinstance(doc.get("embedding"), dict) else {}
            usable = (doc.get("status") == "active" and emb.get("status") == "completed"
                      and emb.get("model") == lists.model and text.recipe_of(emb) == text.RECIPE
                      and emb.get("vector") is not None)
            language = stored_language(doc)
            if usable and (doc["_id"] not in lists.hashes or lists.hashes[doc["_id"]] != emb.get("textHash")
                           or lists.index is None or doc["_id"] not in lists.index
                           or lists.languages.get(doc["_id"]) != language):
                embedded.append((doc["_id"], vector_from_bson(emb["vector"]), emb.get("textHash"), language))
            elif not usable and lists.index is not None and doc["_id"] in lists.index:
                removed.append(doc["_id"])
        if removed:
            lists.remove(removed)
        if embedded:
            lists.on_embedded(*(list(column) for column in zip(*embedded)), only_changed=True)
        lists.synced_at = mark
    if time.monotonic() - lists.last_reconcile > lists.reconcile_every:
        reconcile(lists)

def reconcile(lists) -> int:
    """Drop index rows whose job no longer exists or no longer qualifies (deleted by others).

    A backstop (deletions and closes reach the index through the sync): it reads every indexed job back,
    which on the embedded database costs seconds at 10,000 jobs, so it runs every RECONCILE_EVERY or
    every 50 times its last duration, whichever is longer (at most RECONCILE_SHARE of the time).
    """
    started = lists.last_reconcile = time.monotonic()
    if lists.index is None or not len(lists.index):
        return 0
    with lists.lock:
        ids = list(lists.index.ids())
    live = lists.still_qualifying(ids)
    lists.reconcile_every = max(RECONCILE_EVERY, (time.monotonic() - started) / RECONCILE_SHARE)
    with lists.lock:   # a job added meanwhile is not among ``ids``, so never taken for stale
        stale = [i for i in ids if i not in live and i in lists.index]
    if stale:
        lists.remove(stale)
    return len(stale)
