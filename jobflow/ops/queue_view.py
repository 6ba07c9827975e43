"""The queue as the dashboard and the admin API page through it: filters, keyset pages, one item.

Lists are keyset pages newest-first, read in growing ``_id`` windows of one
state at a time (index ``status, -_id``), never a sort of a whole state. A
filter names only fields of one index (an equality prefix, then at most one
range or ``$in``), and never ``$or``: otherwise the server reads far more than
it returns.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.collation import Collation

from jobflow.jobs import queue
from jobflow.models import Job, QueueItem
from jobflow.models.queue_item import QUEUE_STATUSES
from jobflow.timeutil import utcnow

TASK_TYPES = (queue.GENERATE_EMBEDDING,)
PAGE_SIZE = 50
# Windows of ``_id`` time read one after the other until a page is full; the last is unbounded.
WINDOWS = (timedelta(minutes=15), timedelta(hours=2), timedelta(hours=16), timedelta(days=5), timedelta(days=40),
           None)
CASE_INSENSITIVE = Collation(locale="en", strength=2)   # the collation of Job's ``title_ci`` index
QUEUE_FIELDS = {"errorHistory": 0}
# The times an ObjectId can hold: four bytes of seconds since the epoch (1970-01-01 to 2106-02-07).
OID_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
OID_LAST = OID_EPOCH + timedelta(seconds=2**32 - 1)


def parse_oid(value: Any) -> ObjectId | None:
    """An ObjectId from text, or None when it is not one."""
    if isinstance(value, ObjectId):
        return value
    try:
        return ObjectId(str(value or "").strip())
    except (InvalidId, TypeError):
        return None


@dataclass(frozen=True)
class QueueFilter:
    """What the queue page shows: a state, a task, and a job id or title."""
    status: str | None = None
    task: str | None = None
    q: str | None = None

    @classmethod
    def from_args(cls, args) -> "QueueFilter":
        """A filter from query arguments; unknown states and tasks are ignored."""
        status = args.get("status") or None
        task = args.get("task") or None
        q = (args.get("q") or "").strip()[:200] or None
        return cls(status if status in QUEUE_STATUSES else None, task if task in TASK_TYPES else None, q)

    def args(self) -> dict:
        """The filter as query arguments."""
        return {k: v for k, v in (("status", self.status), ("task", self.task), ("q", self.q)) if v}

    def describe(self) -> str:
        """The filter in words, for confirmations and the audit log."""
        parts = [self.status or "any state"]
        if self.task:
            parts.append(f"task {self.task}")
        if self.q:
            parts.append(f"matching {self.q!r}")
        return ", ".join(parts)

    def failed_query(self) -> dict | None:
        """The query of the failed items this filter shows (for "retry all matching"); None if it shows none."""
        if self.status not in (None, "failed"):
            return None
        query: dict = {}
        if self.task:
            query["taskType"] = self.task
        if self.q:
            query["_id"] = {"$in": [d["_id"] for d in _search_items(self, "failed")]}
        return query


def search_job_ids(q: str, limit: int = 200) -> list[ObjectId]:
    """Jobs whose id is ``q`` or whose title starts with ``q`` (case-insensitive, indexed)."""
    oid = parse_oid(q)
    if oid is not None:
        return [oid]
    return [j["_id"] for j in _title_prefix(q, {"_id": 1}, limit)]


def _title_prefix(q: str, projection: dict, limit: int) -> list[dict]:
    q = q.strip()
    if not q:
        return []
    return list(Job._get_collection().find({"title": {"$gte": q, "$lt": q + "\uffff"}}, projection,
                             collation=CASE_INSENSITIVE).limit(limit))


def _search_items(flt: QueueFilter, status: str | None, limit: int = 1000) -> list[dict]:
    """Items of the jobs matching ``flt.q`` (or the item with that id), newest first; no $or, each read indexed."""
    ids = search_job_ids(flt.q or "")
    item_id = parse_oid(flt.q)
    found: dict[ObjectId, dict] = {}
    for query in ([{"jobId": {"$in": ids}}] if ids else []) + ([{"_id": item_id}] if item_id else []):
        if status:
            query["status"] = status
        if flt.task:
            query["taskType"] = flt.task
        for doc in QueueItem._get_collection().find(query, QUEUE_FIELDS).limit(limit):
            found[doc["_id"]] = doc
    return sorted(found.values(), key=lambda d: d["_id"], reverse=True)


def _oid_at(when: datetime) -> ObjectId | None:
    """The first ObjectId of the second ``when``; None when no ObjectId holds that time (before 1970, after 2106)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    if not OID_EPOCH <= when <= OID_LAST:
        return None
    return ObjectId.from_datetime(when)


def _shifted(anchor: datetime, span: timedelta) -> datetime | None:
    """``anchor + span``, or None when that is no datetime at all."""
    try:
        return anchor + span
    except OverflowError:
        return None


def _windowed(base: dict, before: ObjectId | None, after: ObjectId | None, limit: int,
              now: datetime) -> list[dict]:
    """Up to ``limit`` items matching ``base`` next to the cursor, read in growing ``_id`` windows.

    A window whose far end lies outside the times an ObjectId can hold (a cursor such as 24 zeros or
    24 f's) is unbounded on that side, and it is the last one read.
    """
    direction = 1 if after is not None else -1
    anchor = (after or before).generation_time if (after or before) else now
    docs: list[dict] = []
    for span in WINDOWS:
        cond: dict = {}
        edge = None
        if span is not None:
            shifted = _shifted(anchor, span if after is not None else -span)
            edge = _oid_at(shifted) if shifted is not None else None
        if after is not None:
            cond["$gt"] = after
            if edge is not None:
                cond["$lt"] = edge
        else:
            if before is not None:
                cond["$lt"] = before
            if edge is not None:
                cond["$gte"] = edge
        query = dict(base)
        if cond:
            query["_id"] = cond
        docs = list(QueueItem._get_collection().find(query, QUEUE_FIELDS).sort("_id", direction).limit(limit))
        if len(docs) >= limit or edge is None:
            break
    return docs


@dataclass
class QueuePage:
    """One page of queue items, newest first, with cursors to the older and newer pages."""
    items: list[dict]
    older: str | None
    newer: str | None


def queue_page(flt: QueueFilter, before: str | None = None, after: str | None = None, limit: int = PAGE_SIZE,
               now: datetime | None = None) -> QueuePage:
    """Items matching the filter, newest first, a keyset page before (or after) a cursor id."""
    now = now or utcnow()
    before_id, after_id = parse_oid(before), parse_oid(after)
    if flt.q:
        docs = _search_items(flt, flt.status)
        if before_id:
            docs = [d for d in docs if d["_id"] < before_id]
        if after_id:
            docs = [d for d in docs if d["_id"] > after_id][-limit - 1:]
        has_more = len(docs) > limit
        page = docs[:limit] if not after_id else docs[-limit:]
    else:
        states = [flt.status] if flt.status else list(QUEUE_STATUSES)
        merged: list[dict] = []
        for state in states:
            base = {"status": state}
            if flt.task:
                base = {"taskType": flt.task, "status": state}
            merged += _windowed(base, before_id, after_id, limit + 1, now)
        merged.sort(key=lambda d: d["_id"], reverse=after_id is None)
        has_more = len(merged) > limit
        page = merged[:limit]
        if after_id:
            page.reverse()
    older = str(page[-1]["_id"]) if page and (has_more or after_id) else None
    newer = str(page[0]["_id"]) if page and (before_id or (after_id and has_more)) else None
    return QueuePage(with_titles(page), older, newer)


def find_queue_item(item_id: str) -> dict | None:
    """One queue item with its whole error history and its job's title."""
    oid = parse_oid(item_id)
    doc = QueueItem._get_collection().find_one({"_id": oid}) if oid else None
    return with_titles([doc])[0] if doc else None

def with_titles(items: list[dict]) -> list[dict]:
    """Queue items with ``jobTitle`` set from their jobs (one indexed read)."""
    ids = list({i["jobId"] for i in items if i.get("jobId")})
    found = Job._get_collection().find({"_id": {"$in": ids}}, {"title": 1}) if ids else ()
    titles = {j["_id"]: j.get("title") for j in found}
    for item in items:
        item["jobTitle"] = titles.get(item.get("jobId"))
    return items
