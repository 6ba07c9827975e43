"""Bringing a process's similarity index in step with what other processes wrote.

``follow_changes`` (the worker's index sync, every few seconds) reads the jobs
changed, embedded or deleted since the last sync;
``reconcile`` is the backstop that reads every indexed job back, paced so it
takes a small share of the time: it drops what no longer qualifies, and adds
what the sync passed by. Both act on a ``SimilarLists``.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from jobflow.db import commands
from jobflow.embeddings import text
from jobflow.embeddings.language import stored_language
from jobflow.models import JobChange, JobDeletion
from jobflow.models.fields import vector_from_bson
from jobflow.timeutil import utcnow

log = logging.getLogger("jobflow.similarity")

SYNC_MARGIN = timedelta(seconds=5)      # re-read a little of the past: clocks of hosts differ
RECONCILE_PAGE = 50                     # ids per query when reconciling (a long $in costs SecantusDB its square)
RECONCILE_MARGIN = timedelta(seconds=60)  # the reconcile looks at writes since its last run and this much before
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
    for chunk in commands.chunks(noted):
        for doc in lists.collection().find({"_id": {"$in": list(chunk)}}, fields):
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
            fits = usable(lists, doc)
            language = stored_language(doc)
            if fits and (doc["_id"] not in lists.hashes or lists.hashes[doc["_id"]] != emb.get("textHash")
                         or lists.index is None or doc["_id"] not in lists.index
                         or lists.languages.get(doc["_id"]) != language):
                embedded.append((doc["_id"], vector_from_bson(emb["vector"]), emb.get("textHash"), language))
            elif not fits and lists.index is not None and doc["_id"] in lists.index:
                removed.append(doc["_id"])
        if removed:
            lists.remove(removed)
        if embedded:
            lists.on_embedded(*(list(column) for column in zip(*embedded)), only_changed=True)
        lists.synced_at = mark
    if time.monotonic() - lists.last_reconcile > lists.reconcile_every:
        reconcile(lists)


def usable(lists, doc: dict, vector: bool = True) -> bool:
    """Whether a job document belongs in the index: active, embedded with this model and the current recipe
    (``vector``: and its vector was read, and is there)."""
    emb = doc.get("embedding") if isinstance(doc.get("embedding"), dict) else {}
    return (doc.get("status") == "active" and emb.get("status") == "completed" and emb.get("model") == lists.model
            and text.recipe_of(emb) == text.RECIPE and (not vector or emb.get("vector") is not None))


def still_qualifying(lists, ids: list) -> set:
    """Which of ``ids`` still belong in the index, asked a page of ids at a time.

    Short lookups by ``_id`` instead of one scan of every job: a database that serves reads one at a time
    (SecantusDB, where a range of ``_id`` is a scan too) keeps answering others between the pages.
    """
    live: set = set()
    for start in range(0, len(ids), RECONCILE_PAGE):
        page = ids[start:start + RECONCILE_PAGE]
        live.update(d["_id"] for d in lists.collection().find({"_id": {"$in": page}, **lists.indexed_query()},
                                                              {"_id": 1}))
    return live


def passed_by(lists, since, until) -> list:
    """Jobs written from ``since`` to ``until`` (stamped then, and not since) that belong in the index but are
    missing from it, or are indexed with another text than the stored one (indexed queries, without vectors)."""
    fields = {"status": 1, "updatedAt": 1, "embedding.status": 1, "embedding.model": 1, "embedding.recipe": 1,
              "embedding.textHash": 1, "embedding.generatedAt": 1}
    window = {"$gte": since, "$lt": until}
    seen: dict = {}
    for query in ({"updatedAt": window}, {"embedding.generatedAt": window}):
        for doc in lists.collection().find(query, fields):
            seen.setdefault(doc["_id"], doc)
    notes = JobChange._get_collection()
    noted = [d["_id"] for d in notes.find({"at": window}, {"_id": 1}) if d["_id"] not in seen]
    for chunk in commands.chunks(noted):
        for doc in lists.collection().find({"_id": {"$in": list(chunk)}}, fields):
            seen.setdefault(doc["_id"], doc)
    # Written again since: the next sync reads it.
    later = {d["_id"] for d in notes.find({"at": {"$gte": until}}, {"_id": 1})}
    with lists.lock:
        return [i for i, doc in seen.items() if usable(lists, doc, vector=False) and i not in lists.storing
                and i not in later and all(not isinstance(t, datetime) or t < until
                                           for t in (doc.get("updatedAt"), doc["embedding"].get("generatedAt")))
                and (lists.index is None or i not in lists.index
                     or lists.hashes.get(i) != doc["embedding"].get("textHash"))]


def reconcile(lists) -> int:
    """Bring the index in step with the stored jobs; how many it dropped or (re)added.

    A backstop (changes reach the index through the sync): every indexed job is read back, and one that no
    longer qualifies is dropped (deleted or closed by others). The jobs written since the last reconcile
    (and RECONCILE_MARGIN before) are looked at again: one that qualifies but is missing, or is indexed
    with another text, is read and ranked (the sync looks a few seconds back by the time a write was
    stamped, so a write that landed long after its stamp passes it by). Reading every indexed job back
    costs the embedded database seconds at 10,000 jobs, so it runs every RECONCILE_EVERY or every 50
    times its last duration, whichever is longer (at most RECONCILE_SHARE of the time).
    """
    started = lists.last_reconcile = time.monotonic()
    mark = utcnow()
    since = (lists.reconciled_at or mark) - RECONCILE_MARGIN
    with lists.lock:
        ids = list(lists.index.ids()) if lists.index is not None else []
    live = still_qualifying(lists, ids)
    with lists.lock:   # a job added meanwhile is not among ``ids``, nor one whose vector is on its way: not stale
        stale = [i for i in ids if i not in live and i in lists.index and i not in lists.storing]
        if stale:
            lists.remove(stale)
    # Up to the sync's look-back: what was stamped later, the next sync reads anyway.
    added = lists.ensure_listed(passed_by(lists, since, (lists.synced_at or mark) - SYNC_MARGIN), only_changed=True)
    lists.reconciled_at = mark
    lists.reconcile_every = max(RECONCILE_EVERY, (time.monotonic() - started) / RECONCILE_SHARE)
    if stale or added:
        log.info("similarity index reconciled: %d jobs dropped (no longer qualifying), %d added or read again "
                 "(their changes had passed the index sync by)", len(stale), added)
    return len(stale) + added

