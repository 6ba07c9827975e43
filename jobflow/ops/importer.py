"""Import job postings from CSV or JSON lines, validated, deduplicated, queued."""
from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from jobflow.jobs import queue
from jobflow.jobs.store import WRITABLE_FIELDS, ValidationError, validate
from jobflow.models import Job
from jobflow.timeutil import utcnow

csv.field_size_limit(sys.maxsize)

# Columns of other exports that mean one of our fields.
COLUMN_ALIASES = {"id": "externalId", "external_id": "externalId", "employment_type": "employmentType",
                  "salary_range": "salaryRange", "salary": "salaryRange"}
BATCH = 500


@dataclass
class ImportReport:
    """What an import did, with a reason for every row it did not take."""
    imported: int = 0
    adjusted: int = 0
    skipped: int = 0
    invalid: int = 0
    queued: int = 0
    reasons: list[str] = field(default_factory=list)


class ImportFileError(ValueError):
    """The file cannot be read as CSV or JSON lines."""


def read_rows(path: Path) -> Iterator[tuple[int, object]]:
    """(line or row number, row) from a .csv, .jsonl/.ndjson or .json file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=2):
                yield number, row
    elif suffix in (".jsonl", ".ndjson", ".json"):
        with open(path, encoding="utf-8") as handle:
            first = handle.read(1)
            handle.seek(0)
            if suffix == ".json" and first == "[":
                try:
                    rows = json.load(handle)
                except json.JSONDecodeError as exc:
                    raise ImportFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
                for number, row in enumerate(rows, start=1):
                    yield number, row
                return
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield number, ImportFileError(f"not valid JSON ({exc.msg})")
    else:
        raise ImportFileError(f"{path}: expected a .csv, .jsonl, .ndjson or .json file")


TITLE_CUT = 120


def short_title(text: str) -> str:
    """A title from the first line of a text, cut at a word boundary."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if len(line) <= TITLE_CUT:
        return line
    return line[:TITLE_CUT].rsplit(" ", 1)[0].rstrip(" ,.;:-(") + "…"


def _fields(row) -> tuple[dict, bool]:
    """Clean fields of one row, and whether its title had to be derived or shortened."""
    if not isinstance(row, dict):
        raise ValidationError({"row": "expected an object with job fields"})
    data = {}
    for key, value in row.items():
        if key is None:
            continue
        name = COLUMN_ALIASES.get(key, key)
        if name in WRITABLE_FIELDS and value not in (None, ""):
            data[name] = value if isinstance(value, str) else str(value)
    # Exports often lack a title, or carry the whole posting in it: derive one a person can read.
    title = (data.get("title") or "").strip()
    adjusted = False
    if not title and data.get("description"):
        data["title"], adjusted = short_title(data["description"]), True
    elif len(title) > TITLE_CUT * 2:
        data["title"], adjusted = short_title(title), True
    return validate(data), adjusted


def count_rows(path: Path) -> int:
    """How many rows the file holds (for the progress bar)."""
    return sum(1 for _ in read_rows(path))


def import_jobs(path: Path, progress: Callable[[int], None] = lambda n: None, source: str = "import",
                id_prefix: str | None = None) -> ImportReport:
    """Import every row; rows already imported (same externalId) are skipped.

    With ``id_prefix``, a row without an id gets ``id_prefix + row number`` so a second import skips it.
    """
    report = ImportReport()
    coll = Job._get_collection()
    pending: list[dict] = []
    seen: set[str] = set()

    def flush():
        if not pending:
            return
        external = [d["externalId"] for d in pending if d.get("externalId")]
        existing = {d["externalId"] for d in coll.find({"externalId": {"$in": external}}, {"externalId": 1})}
        fresh = [d for d in pending if not d.get("externalId") or d["externalId"] not in existing]
        report.skipped += len(pending) - len(fresh)
        for doc in pending:
            if doc not in fresh:
                report.reasons.append(f"skipped: externalId {doc['externalId']!r} already imported")
        if fresh:
            result = coll.insert_many(fresh, ordered=True)
            report.imported += len(result.inserted_ids)
            active = [i for i, d in zip(result.inserted_ids, fresh) if d.get("status") == "active"]
            report.queued += queue.enqueue_idle(active, priority=queue.PRIORITY_LIVE, source=source)
        pending.clear()

    for number, row in read_rows(path):
        progress(1)
        try:
            if isinstance(row, Exception):
                raise ValidationError({"row": str(row)})
            fields, adjusted = _fields(row)
        except ValidationError as exc:
            report.invalid += 1
            report.reasons.append(f"row {number}: " + "; ".join(f"{k}: {v}" for k, v in exc.fields.items()))
            continue
        report.adjusted += adjusted
        if id_prefix and not fields.get("externalId"):
            fields["externalId"] = f"{id_prefix}{number}"
        ext = fields.get("externalId")
        if ext and ext in seen:
            report.skipped += 1
            report.reasons.append(f"row {number}: skipped: externalId {ext!r} repeats an earlier row")
            continue
        if ext:
            seen.add(ext)
        now = utcnow()
        fields.setdefault("status", "active")
        pending.append({**fields, "createdAt": now, "updatedAt": now, "similarJobs": []})
        if len(pending) >= BATCH:
            flush()
    flush()
    return report


DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"


def load_demo_data(progress: Callable[[int], None] = lambda n: None) -> ImportReport:
    """Import the bundled demo postings (used on first run when the database is empty)."""
    total = ImportReport()
    for path in sorted(DEMO_DIR.glob("*.jsonl")):
        report = import_jobs(path, progress, source="demo", id_prefix=f"demo:{path.stem}:")
        total.imported += report.imported
        total.skipped += report.skipped
        total.invalid += report.invalid
        total.queued += report.queued
        total.reasons += report.reasons
    return total
