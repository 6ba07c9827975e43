"""An upgrade under way (a new embedding recipe or model): the board keeps serving every job's stored list.

The new index holds only the jobs embedded the new way, so early in a re-embedding a job's new list is short. A
stored list of the old kind stays while the new one is shorter than it and than top-N; those kept are written
once no active job of the old kind is left (looked for every UPGRADE_CHECK seconds while an upgrade is under way).
"""
from __future__ import annotations

import logging
import time

from bson import ObjectId

from jobflow.embeddings import text

log = logging.getLogger("jobflow.similarity")

UPGRADE_CHECK = 30.0
PAGE = 50        # ids per query (a long $in costs SecantusDB its square)


def under_way(lists) -> bool:
    """Whether some active job is still embedded with another model or recipe (once over, only looked for again
    after the next load)."""
    checked = lists._upgrade
    if checked is not None and (not checked[1] or time.monotonic() - checked[0] < UPGRADE_CHECK):
        return checked[1]
    older = lists.collection().find_one({"status": "active", "embedding.status": "completed", "$or": [
        {"embedding.model": {"$ne": lists.model}}, {"embedding.recipe": text.older_recipe_query()}]}, {"_id": 1})
    lists._upgrade = (time.monotonic(), older is not None)
    if checked is not None and checked[1] and older is None and lists.held:
        log.info("every active job is embedded with %s (recipe %s): writing the %d lists kept from before",
                 lists.model, text.RECIPE, len(lists.held))
        held, lists.held = list(lists.held), set()
        lists.write(held)
    return older is not None


def settle(lists) -> None:
    """Write the lists kept through an upgrade once it is over (each index sync looks): the last writes of a
    re-embedding may come before its end is seen, and nothing else may be written for a long time after."""
    if lists.held:
        with lists.lock:
            under_way(lists)


def writable(lists, ids: list[ObjectId]) -> list[ObjectId]:
    """Of ``ids``, those whose list may be written now; the others are kept in ``lists.held``."""
    keep = set()
    for start in range(0, len(ids), PAGE):
        for doc in lists.collection().find({"_id": {"$in": ids[start:start + PAGE]}},
                                           {"similarityMetadata.model": 1, "similarityMetadata.recipe": 1,
                                            "similarJobs.jobId": 1}):
            meta = doc.get("similarityMetadata") if isinstance(doc.get("similarityMetadata"), dict) else {}
            stored = doc.get("similarJobs") if isinstance(doc.get("similarJobs"), list) else []
            older = (meta.get("model"), meta.get("recipe") or text.LEGACY_RECIPE) != (lists.model, text.RECIPE)
            new = len(lists.entries.get(doc["_id"], []))
            if older and len(stored) > new and new < lists.top_n:
                keep.add(doc["_id"])
    lists.held.difference_update(set(ids) - keep)
    lists.held |= keep
    return [i for i in ids if i not in keep]
