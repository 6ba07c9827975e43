"""What the change stream's events stand for, and whether the stream's history since a position is whole."""
from __future__ import annotations

from pymongo.errors import OperationFailure

from jobflow.capture.act import Change
from jobflow.capture.source import Source

HISTORY_LOST = {286, 280, 260, 9}            # history lost, fatal, invalid or unreadable resume token


def change_of(event: dict, source: Source) -> Change | None:
    """The ``Change`` an event stands for (None for the stream's own events)."""
    kind = event.get("operationType")
    key = (event.get("documentKey") or {}).get("_id")
    when = event.get("wallTime")
    if kind == "delete":
        return Change(key, deleted=True, written_at=when)
    if kind == "insert":
        return Change(key, written_at=when, inserted=True)
    if kind == "replace":
        return Change(key, text_touched=True, status_touched=True, written_at=when)
    if kind == "update":
        update = event.get("updateDescription") or {}
        names = {name.split(".")[0] for name in [*(update.get("updatedFields") or {}), *(update.get("removedFields") or [])]}
        text, status = source.touched(names)
        return Change(key, text_touched=text, status_touched=status, written_at=when)
    return None


def history_kept(collection, pipeline: list, since: dict) -> bool:
    """Whether the server still holds its history from ``since`` (the stream's position before a read) on.

    A server that prunes its history under an open stream may let the stream skip what it pruned without a word
    (SecantusDB with a short oplog does; MongoDB answers ChangeStreamHistoryLost). A resume from the earlier
    position is refused when the history after it was pruned: only then can the read have missed events.
    """
    try:
        collection.watch(pipeline, resume_after=since, max_await_time_ms=0, batch_size=0).close()
    except OperationFailure as exc:
        if exc.code in HISTORY_LOST:
            return False
        raise
    return True
