"""What admins may do to the pipeline, each with its impact preview and an audit entry.

The dashboard pages, the JSON admin API and the CLI call these same functions.
Each ``preview_*`` says how many items an action touches and how long that
takes at the current throughput; the action itself writes one audit entry
(who, what, when, how many).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from jobflow.jobs import queue
from jobflow.models import AuditEntry, QueueItem
from jobflow.models.queue_item import FINISHED_STATUSES
from jobflow.ops import recompute, samples
from jobflow.ops.counts import job_counts
from jobflow.ops.failures import failure_group
from jobflow.ops.overview import estimate_seconds, throughput_per_minute
from jobflow.ops.queue_view import parse_oid
from jobflow.ops.workers import worker_rows
from jobflow.timeutil import utcnow

log = logging.getLogger("jobflow.admin")


class ActionRefused(Exception):
    """The action cannot run on this target now; the message says why."""


@dataclass(frozen=True)
class Actor:
    """Who acts, through what (page, api, cli), from where (the client's address; for cli, the host)."""
    name: str
    via: str
    ip: str | None = None


def cli_actor() -> Actor:
    """Who runs a command: the OS account of the process, by its uid ($USER can say anything), on this host."""
    import os
    import pwd
    import socket
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:            # a uid without an account (a container's arbitrary uid)
        name = f"uid {uid}"
    return Actor(name, "cli", socket.gethostname())


def audit(actor: Actor, action: str, target: str = "", count: int = 0, **detail) -> None:
    """Write one audit entry (and one log line) for an action."""
    AuditEntry(actor=actor.name, via=actor.via, action=action, target=target[:500], count=count, detail=detail,
               ip=actor.ip).save()
    log.info("audit: %s via %s: %s %s (%d items)", actor.name, actor.via, action, target, count)


AUDIT_PAGE = 100
AUDIT_WINDOWS = (timedelta(days=1), timedelta(days=30), timedelta(days=365), None)


# A page cursor earlier than this is no cursor of any entry: such a ``before`` shows the first page.
AUDIT_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def audit_cursor(before: str | None) -> datetime | None:
    """The time an audit page ends at, from the ``before`` of its link (ISO 8601, UTC unless it says otherwise).

    None (the first page) when it is absent, not a time, earlier than 1970, or so far out that a
    window of entries cannot be counted back from it.
    """
    if not before or not isinstance(before, str) or len(before) > 64:
        return None
    try:
        anchor = datetime.fromisoformat(before.strip())
    except ValueError:
        return None
    if anchor.tzinfo is None:
        anchor = anchor.replace(tzinfo=timezone.utc)
    try:
        anchor = anchor.astimezone(timezone.utc)
    except (OverflowError, ValueError):   # e.g. 0001-01-01T00:00+01:00 is before datetime.min in UTC
        return None
    if anchor < AUDIT_EPOCH:
        return None
    return anchor


def recent_audit(before: str | None = None, limit: int = AUDIT_PAGE, now: datetime | None = None) -> list[AuditEntry]:
    """Audit entries newest first, a page of those before the time ``before`` (ISO), read in growing windows.

    A ``before`` that is no usable time (see ``audit_cursor``) gives the first page; one in the future
    is the first page too.
    """
    top = (now or utcnow()) + timedelta(seconds=1)
    anchor = audit_cursor(before)
    if anchor is not None and anchor < top:
        top = anchor
    entries: list[AuditEntry] = []
    for span in AUDIT_WINDOWS:
        cond = {"$lt": top} if span is None else {"$lt": top, "$gte": top - span}
        entries = list(AuditEntry.objects(__raw__={"at": cond}))
        if len(entries) >= limit:
            break
    return sorted(entries, key=lambda e: e.at, reverse=True)[:limit]


@dataclass
class Impact:
    """What an action would do: how many items, how long at the current throughput."""
    action: str
    title: str
    count: int
    seconds: float | None
    unit: str = "items"
    notes: list[str] = field(default_factory=list)
    duration: str | None = None   # said instead of an estimate when the action runs at once

    def as_json(self) -> dict:
        return {"action": self.action, "title": self.title, "count": self.count, "unit": self.unit,
                "estimatedSeconds": None if self.seconds is None else round(self.seconds, 1),
                "duration": self.duration, "notes": self.notes}


def _rate_note(per_minute: float | None) -> str:
    if per_minute:
        return f"current throughput: {per_minute:,.1f} items a minute"
    return "no item completed recently, so the duration cannot be estimated (is a worker running?)"


# ----- retry ------------------------------------------------------------------------------------

def preview_retry_failed(query: dict | None = None, what: str = "all failed items") -> Impact:
    """How many failed items a retry would put back, and how long the workers need for them."""
    count = QueueItem._get_collection().count_documents({"status": "failed", **(query or {})})
    per_minute = throughput_per_minute()
    return Impact("retry-failed", f"Retry {what}", count, estimate_seconds(count, per_minute),
                  notes=["They go back to pending with fresh attempts.", _rate_note(per_minute)])


def retry_failed(actor: Actor, query: dict | None = None, what: str = "all failed items") -> int:
    """Put failed items (all, or those matching ``query``) back to pending; how many."""
    count = queue.retry_failed(query)
    audit(actor, "retry-failed", what, count)
    return count


def retry_item(actor: Actor, item_id: str) -> int:
    """Put one failed item back to pending."""
    item = _item(item_id)
    if item["status"] != "failed":
        raise ActionRefused(f"the item is {item['status']}; only failed items can be retried")
    count = queue.retry_failed({"_id": item["_id"]})
    audit(actor, "retry-item", str(item["_id"]), count, jobId=str(item.get("jobId")))
    return count


def discard_item(actor: Actor, item_id: str, settings: dict) -> int:
    """Take a pending or failed item out of the queue: it ends as skipped, marked discarded."""
    item = _item(item_id)
    if item["status"] not in ("pending", "failed"):
        raise ActionRefused(f"the item is {item['status']}; only pending or failed items can be discarded")
    was = queue.discard(item["_id"], actor.name, queue.QueuePolicy.from_settings(settings))
    audit(actor, "discard-item", str(item["_id"]), 1 if was else 0, was=item["status"], jobId=str(item.get("jobId")))
    if was is None:
        raise ActionRefused("the item changed meanwhile; reload and try again")
    return 1


def _item(item_id: str) -> dict:
    oid = parse_oid(item_id)
    item = QueueItem._get_collection().find_one({"_id": oid}, {"status": 1, "jobId": 1}) if oid else None
    if item is None:
        raise ActionRefused("no such queue item")
    return item


def preview_retry_group(signature: str) -> Impact:
    """How many failed items share an error signature."""
    group = failure_group(signature)
    if group is None:
        raise ActionRefused("no failed item has this error any more")
    impact = preview_retry_failed({"lastError": {"$in": group["messages"]}}, f"failures like “{signature}”")
    impact.action = "retry-group"
    return impact


def retry_group(actor: Actor, signature: str) -> int:
    """Retry every failed item whose error has this signature."""
    group = failure_group(signature)
    if group is None:
        raise ActionRefused("no failed item has this error any more")
    count = queue.retry_failed({"lastError": {"$in": group["messages"]}})
    audit(actor, "retry-group", signature, count)
    return count


# ----- workers ----------------------------------------------------------------------------------

def release_dead_worker(actor: Actor, worker_id: str, settings: dict) -> int:
    """Give back the items a dead (or stopped) worker holds; live workers are refused."""
    row = next((r for r in worker_rows(settings, limit=1000) if r["workerId"] == worker_id), None)
    if row is None:
        raise ActionRefused("no such worker")
    if row["level"] not in ("dead", "stopped"):
        raise ActionRefused(f"worker {worker_id} is alive ({row['level']}); only a dead worker's items are given back")
    count = queue.release_worker(worker_id)
    audit(actor, "release-worker", worker_id, count)
    return count


# ----- jobs -------------------------------------------------------------------------------------

def requeue_job(actor: Actor, job_id: str) -> bool:
    """Queue a job's embedding at live priority; False when one was already pending (its priority is raised)."""
    oid = parse_oid(job_id)
    from jobflow.models import Job
    if oid is None or not Job.objects(id=oid).only("id").first():
        raise ActionRefused("no such job")
    created = queue.enqueue(oid, priority=queue.PRIORITY_LIVE, source="admin")
    audit(actor, "requeue-job", str(oid), 1 if created else 0, alreadyPending=not created)
    return created


# ----- bulk ------------------------------------------------------------------------------------

def preview_recompute_all(settings: dict) -> Impact:
    """How many similar-jobs lists a full recompute rewrites, and how long the last one took."""
    lists = job_counts(settings, samples.latest_sample())["current"]
    state = recompute.state()
    seconds, notes = None, ["A worker recomputes every list within a minute of the request."]
    if state.get("lastCount") and state.get("lastSeconds") is not None:
        seconds = state["lastSeconds"] * lists / state["lastCount"]
        notes.append(f"the last full recompute did {state['lastCount']:,} lists in {state['lastSeconds']:.1f}s")
    return Impact("recompute-all", "Recompute every similar-jobs list", lists, seconds, unit="lists", notes=notes)


def recompute_all(actor: Actor, settings: dict) -> int:
    """Ask the workers to recompute every similar-jobs list; returns how many lists that is."""
    count = preview_recompute_all(settings).count
    recompute.request()
    audit(actor, "recompute-all", "every similar-jobs list", count)
    return count


def _old_query(days: int) -> tuple[list[dict], str]:
    cutoff = utcnow() - timedelta(days=days)
    return [{"status": s, "finishedAt": {"$lt": cutoff}} for s in FINISHED_STATUSES], cutoff.strftime("%Y-%m-%d %H:%M")


def preview_clear_old(days: int) -> Impact:
    """How many finished items are older than ``days`` days."""
    queries, cutoff = _old_query(days)
    count = sum(QueueItem._get_collection().count_documents(q) for q in queries)
    return Impact("clear-old-queue", f"Delete finished queue items older than {days} days", count, None,
                  notes=[f"completed, skipped and failed items that finished before {cutoff} UTC",
                         "pending and processing items are never touched"],
                  duration="runs at once, as one delete; no worker time")


def clear_old_queue(actor: Actor, days: int) -> int:
    """Delete finished items older than ``days`` days; how many."""
    count = queue.clear_old(days)
    audit(actor, "clear-old-queue", f"finished more than {days} days ago", count)
    return count
