"""Import job postings from CSV or JSON lines, validated, deduplicated, queued."""
from __future__ import annotations

import csv
import io
import json
import os
import stat
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


SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json")
# The most one row may hold: a line of JSON lines, a record of a CSV file, an element of a .json array. The
# same figure as the API's largest body (API_MAX_BODY_BYTES' default): a posting is never near it.
MAX_ROW_CHARS = 1_048_576
_CHUNK = 65_536
NEWLINE = "\n"


def read_rows(path: Path) -> Iterator[tuple[int, object]]:
    """(line or row number, row) from a .csv, .jsonl/.ndjson or .json file, read as a stream.

    Memory stays bounded whatever the file: a row longer than MAX_ROW_CHARS, text that is not UTF-8,
    JSON nested too deeply or a file that is not a regular one (a FIFO, a device, a directory) raise
    ImportFileError naming the line. A line of JSON lines that is merely broken is a row of its own
    (an ImportFileError as the row), reported and skipped like any invalid row.
    """
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ImportFileError(f"expected a .csv, .jsonl, .ndjson or .json file, not {path.name!r}")
    with _open_regular(path) as handle:
        if suffix == ".csv":
            yield from _csv_rows(_lines(handle))
        elif suffix == ".json" and _starts_array(handle):
            yield from _array_rows(handle)
        else:
            yield from _json_lines(_lines(handle))


def _open_regular(path: Path):
    """The file opened for binary reading, or ImportFileError when it is no regular file.

    Checked before opening (a device is never opened) and again on the open descriptor, opened without
    blocking, so a FIFO never waits for a writer and a link swapped meanwhile cannot lead elsewhere.
    """
    try:
        _refuse_special(os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ImportFileError("no such file") from None
    except OSError as exc:
        raise ImportFileError(exc.strerror or str(exc)) from None
    try:
        _refuse_special(os.fstat(fd).st_mode)
    except ImportFileError:
        os.close(fd)
        raise
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _refuse_special(mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket or other special file")
    raise ImportFileError(f"{kind}, not a regular file")


def _lines(handle) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, none longer than MAX_ROW_CHARS (a byte-order mark is dropped)."""
    limit = MAX_ROW_CHARS * 4 + 2           # UTF-8 takes at most 4 bytes a character, then \r\n
    number = 0
    while True:
        raw = handle.readline(limit)
        if not raw:
            return
        number += 1
        too_long = f"line {number}: longer than {MAX_ROW_CHARS:,} characters, the most a row may hold"
        if len(raw) == limit and not raw.endswith(b"\n"):
            raise ImportFileError(too_long)
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise ImportFileError(f"line {number}: not UTF-8 text (byte {exc.start + 1} of the line)") from None
        if len(line.rstrip("\r\n")) > MAX_ROW_CHARS:
            raise ImportFileError(too_long)
        yield number, line


def _json_lines(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, object]]:
    for number, line in lines:
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except RecursionError:
            raise ImportFileError(f"line {number}: JSON nested too deeply") from None
        except ValueError as exc:   # JSONDecodeError, or an integer of more than 4,300 digits
            yield number, ImportFileError(f"not valid JSON ({getattr(exc, 'msg', None) or exc})")


def _csv_rows(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, object]]:
    """Rows of a CSV file as dicts, numbered as a spreadsheet shows them (the header is row 1)."""
    record = {"chars": 0, "line": 0}

    def fed():
        for number, line in lines:
            record["chars"] += len(line)
            record["line"] = number
            if record["chars"] > MAX_ROW_CHARS:    # a quoted field left open runs on to the end of the file
                raise ImportFileError(f"line {number}: a record longer than {MAX_ROW_CHARS:,} characters, "
                                      "the most a row may hold (an unclosed quote?)")
            yield line
    reader = csv.DictReader(fed())
    try:
        for number, row in enumerate(reader, start=2):
            record["chars"] = 0
            yield number, row
    except csv.Error as exc:
        raise ImportFileError(f"line {record['line']}: not valid CSV ({exc})") from None


def _starts_array(handle) -> bool:
    """Whether the file's first character (after a byte-order mark and blanks) opens a JSON array."""
    head = handle.read(_CHUNK).lstrip(b"\xef\xbb\xbf").lstrip()
    handle.seek(0)
    return head.startswith(b"[")


def _array_rows(handle) -> Iterator[tuple[int, object]]:
    """The elements of a JSON array, decoded one at a time, each at most MAX_ROW_CHARS long."""
    text = io.TextIOWrapper(handle, encoding="utf-8-sig")
    decoder = json.JSONDecoder()
    buffer, lines_before, ended, number = "", 0, False, 0

    def more() -> bool:
        nonlocal buffer
        try:
            chunk = text.read(_CHUNK)
        except UnicodeDecodeError:
            raise ImportFileError(f"{where(len(buffer))} or after it: not UTF-8 text") from None
        buffer += chunk
        return bool(chunk)

    def where(pos: int) -> str:
        return f"element {number + 1} (line {lines_before + buffer.count(NEWLINE, 0, pos) + 1})"

    more()
    pos = buffer.index("[") + 1
    while True:
        while True:
            pos = _skip_blanks(buffer, pos)
            if pos < len(buffer) or ended:
                break
            ended = not more()
        if pos >= len(buffer):
            raise ImportFileError(f"{where(pos)}: not valid JSON (the array is not closed)")
        if buffer[pos] == "]":
            return
        if number and buffer[pos] == ",":
            pos = _skip_blanks(buffer, pos + 1)
        elif number:
            raise ImportFileError(f"{where(pos)}: not valid JSON (expected , or ] between elements)")
        lines_before += buffer.count(NEWLINE, 0, pos)
        buffer, pos = buffer[pos:], 0
        while True:
            try:
                row, end = decoder.raw_decode(buffer, 0)
                # A number or a word cut by the chunk's end decodes too: believe it only with text after it.
                if _skip_blanks(buffer, end) < len(buffer) or ended:
                    break
            except RecursionError:
                raise ImportFileError(f"{where(0)}: JSON nested too deeply") from None
            except ValueError as exc:
                if ended:
                    raise ImportFileError(f"{where(0)}: not valid JSON ({getattr(exc, 'msg', None) or exc})") from None
            if len(buffer) > MAX_ROW_CHARS:
                raise ImportFileError(f"{where(0)}: longer than {MAX_ROW_CHARS:,} characters, the most a row may hold")
            ended = not more()
        number += 1
        yield number, row
        pos = end


def _skip_blanks(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


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
