"""Failed queue items grouped by the signature of their error (the Failures page and its bulk retry)."""
from __future__ import annotations

import re
from datetime import datetime, timedelta

from jobflow.models import QueueItem
from jobflow.timeutil import utcnow

_SIGNATURE_RULES = [
    (re.compile(r"\b[0-9a-f]{24}\b"), "<id>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (re.compile(r"(?i)\b(req|request|trace)([-_ ]?id[:= ]+)[\w.-]+"), r"\1\2<id>"),
    (re.compile(r"https?://\S+"), "<url>"),
    (re.compile(r"'[^']{0,200}'|\"[^\"]{0,200}\""), "'…'"),
    (re.compile(r"\b0x[0-9a-f]+\b|\b[0-9a-f]{12,}\b", re.I), "<hex>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
]


def error_signature(message: str | None) -> str:
    """The error with ids, numbers, URLs and quoted values taken out, so alike failures group together."""
    text = (message or "(no error recorded)").strip()
    for pattern, replacement in _SIGNATURE_RULES:
        text = pattern.sub(replacement, text)
    return text[:200]


def _failed_by_error(match: dict, extra: dict | None = None) -> dict:
    rows = QueueItem._get_collection().aggregate([{"$match": {"status": "failed", **match}},
                               {"$group": {"_id": "$lastError", "n": {"$sum": 1}, **(extra or {})}}])
    return {row["_id"]: row for row in rows}


def failure_groups(now: datetime | None = None) -> list[dict]:
    """Failed items grouped by error signature, with counts in the last hour, day and week; busiest first.

    One pass over the failed items for the totals, then the recent ones by
    the ``status, finishedAt`` index: the last hour and day are small sets,
    and the week is the total less the (usually few) older failures.
    """
    now = now or utcnow()
    totals = _failed_by_error({}, {"last": {"$max": "$finishedAt"}, "tasks": {"$addToSet": "$taskType"}})
    hour = _failed_by_error({"finishedAt": {"$gte": now - timedelta(hours=1)}})
    day = _failed_by_error({"finishedAt": {"$gte": now - timedelta(days=1)}})
    older = _failed_by_error({"finishedAt": {"$lt": now - timedelta(days=7)}})
    groups: dict[str, dict] = {}
    for message, row in totals.items():
        signature = error_signature(message)
        group = groups.setdefault(signature, {"signature": signature, "example": message or "", "count": 0,
                                              "hour": 0, "day": 0, "week": 0, "last": None, "tasks": set(),
                                              "messages": []})
        n = int(row["n"])
        group["count"] += n
        group["hour"] += int(hour.get(message, {}).get("n", 0))
        group["day"] += int(day.get(message, {}).get("n", 0))
        group["week"] += n - int(older.get(message, {}).get("n", 0))
        group["messages"].append(message)
        group["tasks"].update(t for t in row.get("tasks") or [] if t)
        if row.get("last") and (group["last"] is None or row["last"] > group["last"]):
            group["last"], group["example"] = row["last"], message or ""
    result = sorted(groups.values(), key=lambda g: (-g["hour"], -g["day"], -g["week"], -g["count"]))
    for group in result:
        group["tasks"] = sorted(group["tasks"])
    return result


def failure_group(signature: str, now: datetime | None = None) -> dict | None:
    """One failure group by its signature, or None when no failed item has it (any more)."""
    return next((g for g in failure_groups(now) if g["signature"] == signature), None)


