"""Where the board keeps its jobs: the product's own ``jobs`` collection, or the board's collection in its own shape.

With JOBS_SOURCE_COLLECTION set, capture follows that collection and keeps ``jobs`` as the product's copy: each
document's fields are read where JOBS_FIELD_MAP says, its status mapped by JOBS_ACTIVE_STATUSES, and written into
the job of the same ``_id`` (marked ``mirroredAt``), next to the embedding and the list the product keeps there. The
board's collection is only read. Jobs created through ``/api/jobs`` live in ``jobs`` alone and are left alone.
"""
from __future__ import annotations

from pymongo import DeleteMany, UpdateOne

from jobflow.capture.decide import TEXT_FIELDS
from jobflow.db import commands
from jobflow.models import Job
from jobflow.timeutil import utcnow

# What the product copies from the board's documents (its own fields: embedding, lists, never).
COPIED = ("title", "description", "company", "location", "category", "status", "language", "updatedAt",
          "createdAt", "employmentType", "salaryRange", "externalId")
MARK = "mirroredAt"
_MISSING = object()


def _dig(doc, path: str):
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


class Source:
    """The collection capture follows, and how its documents become jobs."""

    def __init__(self, settings: dict):
        self.name = settings.get("JOBS_SOURCE_COLLECTION") or ""
        self.mirrored = bool(self.name)
        self.paths = {field: (settings.get("JOBS_FIELD_MAP") or {}).get(field, field) for field in COPIED}
        self.active = set(settings.get("JOBS_ACTIVE_STATUSES") or ["active"])

    @property
    def collection_name(self) -> str:
        return self.name or Job._meta["collection"]

    def collection(self):
        return Job._get_db()[self.collection_name]

    def describe(self) -> str:
        if not self.mirrored:
            return "the jobs collection"
        moved = {f: p for f, p in self.paths.items() if p != f}
        shown = ", ".join(f"{f}={p}" for f, p in moved.items()) or "the same names"
        return f"the board's collection {self.name} (fields: {shown}; open: {', '.join(sorted(self.active))})"

    # ----- names ----------------------------------------------------------------------------------------------
    def touched(self, names: set[str]) -> tuple[bool, bool]:
        """(a text field, the status or language) written, from an update's top-level names."""
        def hit(fields):
            return any(self.paths[f].split(".")[0] in names for f in fields)
        return hit(TEXT_FIELDS), hit(("status", "language"))

    def updated_at_path(self) -> str:
        return self.paths["updatedAt"]

    def updated_at(self, doc: dict):
        """A followed document's updated-at value (None when it has none)."""
        value = _dig(doc, self.paths["updatedAt"])
        return None if value is _MISSING else value

    # ----- copying ----------------------------------------------------------------------------------------------
    def job_fields(self, doc: dict) -> tuple[dict, list[str]]:
        """(fields to set, fields to remove) of the job copied from a board document."""
        values, gone = {}, []
        for field in COPIED:
            value = _dig(doc, self.paths[field])
            if value is _MISSING or value is None:
                gone.append(field)
            elif field == "status" and isinstance(value, str):
                values[field] = "active" if value in self.active else (
                    value if value in ("draft", "expired") else "closed")
            else:
                values[field] = value
        if "status" in gone:
            gone.remove("status")
            values["status"] = "active"      # a job without a status is open, as in the jobs collection
        return values, gone

    def copy(self, ids: list) -> list:
        """Copy the board's documents of ``ids`` into ``jobs``; the ids gone from the board (their copies
        deleted)."""
        found = {}
        for chunk in commands.chunks(list(ids)):
            found.update({d["_id"]: d for d in self.collection().find({"_id": {"$in": chunk}})})
        return self.write(found.values(), [i for i in ids if i not in found])

    def write(self, docs, gone: list) -> list:
        """Write the copies of ``docs`` and delete the copies of ``gone`` (only copies: never a job of the API)."""
        now = utcnow()
        ops = []
        for doc in docs:
            values, removed = self.job_fields(doc)
            update = {"$set": {**values, MARK: now}}
            if removed:
                update["$unset"] = {name: "" for name in removed}
            ops.append(UpdateOne({"_id": doc["_id"]}, update, upsert=True))
        gone = list(gone)
        ops += [DeleteMany({"_id": {"$in": list(chunk)}, MARK: {"$exists": True}}) for chunk in commands.chunks(gone)]
        commands.write_chunks(ops, lambda chunk: Job._get_collection().bulk_write(list(chunk), ordered=False))
        return gone

    def copies_gone(self, after=None, page: int = 500) -> tuple[list, object]:
        """One page of copies (by ``_id`` after ``after``) whose board document no longer exists: (ids, last id
        seen, None at the end)."""
        query = {MARK: {"$exists": True}}
        if after is not None:
            query["_id"] = {"$gt": after}
        ids = [d["_id"] for d in Job._get_collection().find(query, {"_id": 1}).sort("_id", 1).limit(page)]
        if not ids:
            return [], None
        present = {d["_id"] for chunk in commands.chunks(ids)
                   for d in self.collection().find({"_id": {"$in": list(chunk)}}, {"_id": 1})}
        return [i for i in ids if i not in present], ids[-1]
