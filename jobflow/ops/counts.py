"""Counts of queue states and jobs, and coverage, for the pages, the API, /metrics and health.

On the embedded database a count costs time in proportion to what it counts, so
a state or job count that the latest per-minute sample (written by the worker)
shows above ``LIVE_COUNT_LIMIT`` is taken from that sample and marked
approximate; smaller ones are counted live, so the numbers an admin acts on
(failed, processing, a small backlog) are always exact and current. With no
fresh sample (no worker) a large live count is kept for a minute.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from jobflow.db import commands
from jobflow.embeddings import provider_model
from jobflow.models import Job, QueueItem
from jobflow.timeutil import utcnow

LIVE_COUNT_LIMIT = 2000                 # above this, a count comes from the latest sample (or a short cache)
LIVE_CACHE_SECONDS = 60                 # a large count taken live, with no fresh sample, is reused this long
ACTIVE_STATES = ("pending", "processing", "failed")


@dataclass
class Counts:
    """Counts by name; ``sampled`` names came from the sample of ``as_of`` (approximate, large)."""
    values: dict[str, int]
    sampled: set[str] = field(default_factory=set)
    as_of: datetime | None = None

    def __getitem__(self, name: str) -> int:
        return self.values[name]

    def approx(self, name: str) -> bool:
        """True when the count was taken from the sample, not counted now."""
        return name in self.sampled

    def as_json(self) -> dict:
        return dict(self.values)


_live_cache: dict[str, tuple[float, Any, datetime]] = {}


def _counted(key: str, sample: dict | None, sample_key: str, count: Callable[[], Any], size: Callable[[Any], int]):
    """A count from the fresh sample when large there; else live, and a large live result is kept a minute.

    Returns (value, as_of) where as_of is None for a live count. On the
    embedded database a count costs time in proportion to what it counts;
    large ones are the worker's job, once a minute.
    """
    if sample is not None and sample.get(sample_key) is not None and size(sample[sample_key]) > LIVE_COUNT_LIMIT:
        return sample[sample_key], sample["time"]
    cached = _live_cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < LIVE_CACHE_SECONDS:
        return cached[1], cached[2]
    value = count()
    if size(value) > LIVE_COUNT_LIMIT:
        _live_cache[key] = (time.monotonic(), value, utcnow())
    else:
        _live_cache.pop(key, None)
    return value, None


def queue_counts(sample: dict | None) -> Counts:
    """Pending, processing and failed items: live, or from the sample when large."""
    counts = Counts({})
    for state in ACTIVE_STATES:
        value, as_of = _counted(f"queue:{state}", sample, state,
                                lambda state=state: QueueItem._get_collection().count_documents({"status": state}), int)
        counts.values[state] = int(value)
        if as_of is not None:
            counts.sampled.add(state)
            counts.as_of = as_of
    return counts


def job_counts_live(model: str) -> dict:
    """Job counts without reading the embedded jobs: all, current (model ``model``), by model, failed, text changed.

    Current = all - every other embedding state, because those sets are small
    and counting the large one would decode every job's vector. Each query
    reads one such set through an index and splits it by job status in the
    same pass, so the active figures cost no read of the active jobs.
    """
    jobs = Job._get_collection()
    total = jobs.estimated_document_count()
    other: dict[str, int] = {}
    not_current_active = 0
    text_changed = 0
    for state in ("pending", "processing", "failed", None):
        split = _by_status(jobs, {"embedding.status": state}, changed=state == "pending")
        other[str(state)] = sum(n for _, n, _ in split)
        not_current_active += sum(n for status, n, _ in split if status == "active")
        # update_job marks an embedded job pending when its text changes; the old vector stays.
        text_changed += sum(c for _, _, c in split)
    by_model: dict[str, int] = {}
    # Completed by other models: two range reads of the (embedding.status, embedding.model) index, no $ne scan.
    for bound in ("$lt", "$gt"):
        for row in jobs.aggregate([
                {"$match": {"embedding.status": "completed", "embedding.model": {bound: model}}},
                {"$group": {"_id": {"model": "$embedding.model", "status": "$status"}, "n": {"$sum": 1}}}]):
            name = str(row["_id"].get("model"))
            by_model[name] = by_model.get(name, 0) + int(row["n"])
            not_current_active += int(row["n"]) if row["_id"].get("status") == "active" else 0
    unnamed_split = _by_status(jobs, {"embedding.status": "completed", "embedding.model": None})
    unnamed = sum(n for _, n, _ in unnamed_split)
    not_current_active += sum(n for status, n, _ in unnamed_split if status == "active")
    current = max(total - sum(other.values()) - sum(by_model.values()) - unnamed, 0)
    if current:
        by_model[model] = current
    inactive = sum(jobs.count_documents(query) for query in (
        {"status": {"$lt": "active"}}, {"status": {"$gt": "active"}}, {"status": None}))
    active = max(total - inactive, 0)
    return {"jobsTotal": total, "jobsCurrent": current, "jobsActive": active,
            "jobsActiveCurrent": max(active - not_current_active, 0),
            "jobsByModel": by_model, "jobsFailed": other["failed"], "jobsTextChanged": text_changed}


def _by_status(jobs, match: dict, changed: bool = False) -> list[tuple[str | None, int, int]]:
    """(job status, count, of which still holding a vector when ``changed``) for the jobs matching ``match``."""
    commands.give_way()           # in a draining worker's sample: the API's reads catch up between these counts
    group: dict = {"_id": "$status", "n": {"$sum": 1}}
    if changed:
        group["changed"] = {"$sum": {"$cond": [{"$eq": [{"$type": "$embedding.vector"}, "missing"]}, 0, 1]}}
    return [(row["_id"], int(row["n"]), int(row.get("changed", 0)))
            for row in jobs.aggregate([{"$match": match}, {"$group": group}])]


def coverage_percent(active_current: int, active: int) -> float:
    """Share of active jobs with a current embedding, in percent (0 with no active jobs)."""
    return round(active_current / active * 100, 2) if active else 0.0


def coverage_figures(counts: dict) -> dict:
    """total, current, active, activeCurrent and coverage from job counts (live or a sample's)."""
    total, current = int(counts.get("jobsTotal") or 0), int(counts.get("jobsCurrent") or 0)
    active, active_current = counts.get("jobsActive"), counts.get("jobsActiveCurrent")
    if active is None or active_current is None:     # a sample written before coverage was over active jobs
        active, active_current = total, current
    return {"total": total, "current": current, "active": int(active), "activeCurrent": int(active_current),
            "coverage": coverage_percent(int(active_current), int(active))}


def job_counts(settings: dict, sample: dict | None) -> dict:
    """Coverage (current embeddings over all jobs, and by model), failed and changed; large ones from the sample."""
    model = provider_model(settings)
    counts, as_of = _counted(f"jobs:{model}", sample if sample and sample.get("jobsCurrent") is not None else None,
                             "jobsTotal", lambda: job_counts_live(model),
                             lambda v: v if isinstance(v, int) else v["jobsTotal"])
    if isinstance(counts, int):   # taken from the sample: the sample holds the rest too
        counts = {k: sample.get(k) for k in ("jobsTotal", "jobsCurrent", "jobsActive", "jobsActiveCurrent",
                                             "jobsByModel", "jobsFailed", "jobsTextChanged")}
    return {**coverage_figures(counts), "model": model,
            "byModel": dict(sorted((counts["jobsByModel"] or {}).items(), key=lambda kv: -kv[1])),
            "failed": counts.get("jobsFailed") or 0, "textChanged": counts.get("jobsTextChanged") or 0,
            "approx": as_of is not None, "asOf": as_of}


