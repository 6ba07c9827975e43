"""Database commands of at most ``CHUNK`` documents, and the turn a process may give before each write.

On the embedded database one process serves every command, so no command
carries hundreds of documents, and a process that writes a lot (a draining
worker) installs a gate, ``jobflow.worker.pacing``, that lets the API's queued
reads go first. Without a gate nothing waits.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

from pymongo.errors import PyMongoError

CHUNK = 50      # documents per command
T = TypeVar("T")
_gate: Callable[[], float] | None = None
_thread = threading.local()


def set_gate(gate: Callable[[], float] | None) -> None:
    """Run ``gate`` before each write command of this process from now on (None: no gate)."""
    global _gate
    _gate = gate


def give_way() -> float:
    """Let queued reads go first when this process has a gate; the seconds waited."""
    return _gate() if _gate is not None and not getattr(_thread, "ungated", False) else 0.0


@contextmanager
def ungated():
    """This thread's writes skip the gate meanwhile: change capture, whose few writes are the queue the drain works
    from, goes first like the reads."""
    _thread.ungated = True
    try:
        yield
    finally:
        _thread.ungated = False


def close_quietly(cursor) -> None:
    """Close a cursor or change stream (None: nothing); a database that no longer answers is no error here."""
    if cursor is None:
        return
    try:
        cursor.close()
    except PyMongoError:
        pass


def chunks(items: Sequence) -> Iterator[Sequence]:
    """``items`` CHUNK at a time, one command each (reads; writes go through ``write_chunks``)."""
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]


def write_chunks(items: Sequence, write: Callable[[Sequence], T]) -> list[T]:
    """``write`` each CHUNK of ``items`` (one command each), giving way before each."""
    done = []
    for chunk in chunks(items):
        give_way()
        done.append(write(chunk))
    return done


def retried(load: Callable[[], T], what: str, seconds: float) -> T:
    """``load()``, from the start again while the database fails it (a restart mid-read loses the cursor), for up
    to ``seconds``; then its error."""
    from jobflow.logs import brief
    deadline, wait = time.monotonic() + seconds, 1.0
    while True:
        try:
            return load()
        except PyMongoError as exc:
            if time.monotonic() + wait > deadline:
                raise
            logging.getLogger("jobflow.worker").warning("%s: the database failed (%s); again in %.0f s",
                                                        what, brief(exc), wait)
            time.sleep(wait)
            wait = min(wait * 2, 10.0)
