"""Worker processes as the dashboard shows them: heartbeat level, items held, how many are alive, and why
none embeds (for health)."""
from __future__ import annotations

from datetime import datetime, timedelta

from jobflow.jobs import rollback
from jobflow.models import QueueItem, WorkerStatus
from jobflow.models.worker_status import live_query
from jobflow.timeutil import utcnow


def heartbeat_level(age_seconds: float, state: str, settings: dict) -> str:
    """ok, stale (missed a beat), dead (past WORKER_DEAD_THRESHOLD) or stopped."""
    if state == "stopped":
        return "stopped"
    dead = settings["WORKER_DEAD_THRESHOLD"] / 1000
    stale = min(settings["WORKER_HEARTBEAT_INTERVAL"] * 1.5 / 1000, dead)
    if age_seconds > dead:
        return "dead"
    if age_seconds > stale:
        return "stale"
    return "ok"


def held_items() -> dict[str, int]:
    """Processing items per owning worker."""
    return {row["_id"]: int(row["n"]) for row in QueueItem._get_collection().aggregate([
        {"$match": {"status": "processing"}}, {"$group": {"_id": "$lockedBy", "n": {"$sum": 1}}}])
        if row["_id"]}


def worker_rows(settings: dict, now: datetime | None = None, limit: int = 200) -> list[dict]:
    """Every known worker, newest heartbeat first, with its heartbeat level and the items it holds.

    A worker past WORKER_DEAD_THRESHOLD is ``dead`` whatever it last said (``reportedState``): a process that
    stopped answering is not idle, and what it holds waits for QUEUE_STUCK_TIMEOUT or a "give back".
    """
    now = now or utcnow()
    held = held_items()
    rows = []
    for doc in WorkerStatus._get_collection().find({}).sort("lastHeartbeat", -1).limit(limit):
        beat = doc.get("lastHeartbeat") or doc.get("startedAt") or now
        age = max((now - beat).total_seconds(), 0.0)
        memory = doc.get("memory") or {}
        batch = doc.get("currentBatch") or {}
        reported = doc.get("state") or "running"
        level = heartbeat_level(age, reported, settings)
        rows.append({
            "workerId": doc.get("workerId"), "host": doc.get("host"), "pid": doc.get("pid"),
            "state": "dead" if level == "dead" else reported, "reportedState": reported,
            "reason": f"no heartbeat for {_duration(age)}" if level == "dead" else doc.get("reason") or "",
            "level": level,
            "heartbeatAge": round(age, 1), "lastHeartbeat": beat, "startedAt": doc.get("startedAt"),
            "provider": doc.get("provider"), "model": doc.get("model"),
            "memoryMB": round((memory.get("rss") or 0) / 2**20, 1), "memoryFraction": memory.get("fraction"),
            "processed": int(doc.get("processed") or 0), "failed": int(doc.get("failed") or 0),
            "tokens": int(doc.get("tokensUsed") or 0), "indexSize": int(doc.get("indexSize") or 0),
            "batch": {"id": batch.get("id"), "size": batch.get("size"), "startedAt": batch.get("startedAt")}
            if batch else None,
            "held": held.get(doc.get("workerId"), 0),
        })
    return rows


def alive_workers(settings: dict, now: datetime | None = None) -> int:
    """Workers with a heartbeat within WORKER_DEAD_THRESHOLD that have not stopped."""
    now = now or utcnow()
    cutoff = now - timedelta(milliseconds=settings["WORKER_DEAD_THRESHOLD"])
    return WorkerStatus._get_collection().count_documents(live_query(cutoff))


def worker_summary(rows: list[dict]) -> dict:
    """How many workers are alive (ok or stale), stale, dead and stopped."""
    levels = [r["level"] for r in rows]
    return {"alive": sum(level in ("ok", "stale") for level in levels), "stale": levels.count("stale"),
            "dead": levels.count("dead"), "stopped": levels.count("stopped"),
            "deadHolding": sum(r["held"] for r in rows if r["level"] in ("dead", "stopped"))}


def worker_reasons(settings: dict, now: datetime | None = None) -> list[str]:
    """Why the workers do not embed, in the health report's words (empty when at least one embeds untroubled).

    A rollback or EMBEDDING_WORKER_ENABLED=false switches them off on purpose; a live worker may be paused by
    the memory guard or unable to embed (a refused key); only when none of that explains it, no heartbeat.
    """
    now = now or utcnow()
    cutoff = now - timedelta(milliseconds=settings["WORKER_DEAD_THRESHOLD"])
    heard = list(WorkerStatus._get_collection().find(
        {"lastHeartbeat": {"$gte": cutoff}}, {"workerId": 1, "state": 1, "reason": 1, "disabled": 1}).limit(100))
    reasons = []
    level = rollback.level()
    if level:
        reasons.append(f"workers are switched off (rollback level {level}; lifted by flask --app app rollback "
                       "--reenable)")
    for doc in heard:
        if doc.get("state") == "paused":
            reasons.append(f"worker {doc['workerId']} is paused: memory guard ({doc.get('reason') or 'memory high'})")
        elif doc.get("state") == "degraded":
            reasons.append(f"worker {doc['workerId']} cannot embed: {doc.get('reason') or 'provider trouble'}")
    if not level and not any(d.get("state") != "stopped" for d in heard):
        off = sorted({d.get("reason") or "" for d in heard if d.get("disabled")})
        reasons.append(f"workers are switched off ({'; '.join(off)})" if off else
                       "no active worker (no heartbeat within WORKER_DEAD_THRESHOLD)")
    return reasons


def _duration(seconds: float) -> str:
    """``95 s``, ``12 min``, ``3 h``: a heartbeat's age in a reason."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.0f} h"
