"""The read model: each web process answers ``/similar``, an active job's JSON and its public page from memory.

``for_app`` gives the process's model (READ_MODEL on), started at its first use in that process: until its load
has ended, and for jobs it does not hold (not active, or written a moment ago), answers come from the database.
While the database does not answer, the memory keeps answering and ``stale_for`` says for how long.
"""
from __future__ import annotations

import os
import threading

from bson import ObjectId
from flask import Flask

from jobflow.readmodel.follow import Follower
from jobflow.readmodel.memory import Memory

STALE_AFTER = 3.0      # seconds without an answer from the database before answers are marked stale

_lock = threading.Lock()


class ReadModel:
    def __init__(self):
        self.pid = os.getpid()
        self.memory = Memory()
        self.follower = Follower(self.memory)

    def ready(self) -> bool:
        return self.follower.loaded

    def similar(self, job_id: ObjectId, limit: int, language: str | None) -> tuple[bytes, bool] | None:
        """The ``/similar`` body (JSON bytes) and whether it is the stored list; None: ask the database."""
        if not self.ready():
            return None
        return self.memory.similar(job_id, limit, language, lists_off=self.follower.level > 0)

    def job(self, job_id: ObjectId) -> dict | None:
        """An active job's detail JSON; None: ask the database."""
        entry = self.memory.get(job_id) if self.ready() else None
        return None if entry is None else entry.job()

    def forget(self, job_id: ObjectId) -> None:
        """A job this process just wrote: answered from the database until it has been read again."""
        self.memory.forget(job_id.binary)
        self.follower.reread(job_id)

    def stale_for(self) -> float | None:
        """Seconds since the database last answered, when that is long enough to say so; else None."""
        silent = self.follower.silent_for()
        return silent if self.ready() and silent > STALE_AFTER else None

    def stop(self) -> None:
        self.follower.stop()


def for_app(app: Flask) -> ReadModel | None:
    """This process's read model (started on first use), or None when READ_MODEL is off."""
    if not app.config.get("READ_MODEL"):
        return None
    model = app.extensions.get("readmodel")
    if model is not None and model.pid == os.getpid():
        return model
    with _lock:
        model = app.extensions.get("readmodel")
        if model is None or model.pid != os.getpid():      # a forked process starts its own
            model = ReadModel()
            model.follower.start()
            app.extensions["readmodel"] = model
    return model
